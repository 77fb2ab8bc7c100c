"""The KServe model: one instance per loaded variant, answering V2 infer over REST and gRPC."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

import numpy as np
from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException
from kserve import InferRequest, InferResponse, Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput

from .engine.engine import SAMPLE_RATE
from .service import StreamSummary, SynthesisError, SynthesisService

_GRPC_CODES = {
    400: StatusCode.INVALID_ARGUMENT,
    404: StatusCode.NOT_FOUND,
    413: StatusCode.OUT_OF_RANGE,
    429: StatusCode.RESOURCE_EXHAUSTED,
    503: StatusCode.UNAVAILABLE,
}


class PredictorError(GrpcException):
    """Raised out of predict(): kserve's gRPC interceptor maps GrpcException codes itself, and the
    REST app gets a handler for this class (see server.py) that answers with `http_status`."""

    def __init__(self, message: str, http_status: int):
        super().__init__(details=message, status_code=_GRPC_CODES.get(http_status, StatusCode.INVALID_ARGUMENT))
        self.http_status = http_status
        self.message = message

    def __str__(self) -> str:
        return self.message


def parameter_values(parameters: Any) -> dict[str, Any]:
    """Plain values from REST parameters (a dict) or gRPC ones (InferParameter messages)."""
    values: dict[str, Any] = {}
    for name, value in (parameters or {}).items():
        if hasattr(value, "WhichOneof"):
            choice = value.WhichOneof("parameter_choice")
            value = getattr(value, choice) if choice else None
        values[name] = value
    return values


def _single_element(request: InferRequest, name: str, required: bool) -> bytes | str | None:
    """The one element of a BYTES input: `bytes` over gRPC, `str` when it came as JSON text over REST."""
    tensor = request.get_input_by_name(name)
    if tensor is None:
        if required:
            raise InvalidInput(f"input '{name}' is required (BYTES, shape [1])")
        return None
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input '{name}' must have datatype BYTES, got {tensor.datatype}")
    data = tensor.as_numpy().reshape(-1)
    if data.size != 1:
        raise InvalidInput(f"input '{name}' must have shape [1], got {list(tensor.shape)}")
    value = data[0]
    return value if isinstance(value, str) else bytes(value)


def _audio_prompt(request: InferRequest) -> bytes | None:
    """Raw file bytes over gRPC; over REST, base64 text (JSON strings cannot hold arbitrary bytes,
    and kserve 0.21 turns binary-extension BYTES back into UTF-8 strings)."""
    value = _single_element(request, "audio_prompt", required=False)
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("input 'audio_prompt' sent as text must be the base64 of an audio file") from None


def tolerate_binary_bytes_inputs() -> None:
    """kserve 0.21 answers a binary-extension BYTES input that is not UTF-8 with a 500 carrying the
    whole payload. It is the client's input that is wrong for REST, so answer 400 with a short reason."""
    from kserve.errors import InferenceError
    from kserve.protocol.dataplane import DataPlane

    original = DataPlane.decode_inference_request
    if getattr(original, "_tolerant", False):
        return

    def decode_inference_request(self, body, headers, model_name):
        try:
            return original(self, body, headers, model_name)
        except InferenceError:
            raise InvalidInput(
                "a BYTES input is not valid UTF-8: over REST send audio_prompt as base64 text (or use gRPC for raw bytes)"
            ) from None

    decode_inference_request._tolerant = True
    DataPlane.decode_inference_request = decode_inference_request


class ChatterboxModel(Model):
    def __init__(self, name: str, service: SynthesisService):
        super().__init__(name)
        self.service = service
        self.ready = name in service.engine.variants

    def get_input_types(self) -> list[dict]:
        return [
            {"name": "text", "datatype": "BYTES", "shape": [1]},
            {"name": "audio_prompt", "datatype": "BYTES", "shape": [1], "optional": True},
        ]

    def get_output_types(self) -> list[dict]:
        return [{"name": "audio", "datatype": "FP32", "shape": [-1]}]

    def load(self) -> bool:
        # The engine loads every variant up front (ChatterboxEngine.load); a model is ready once its variant is in.
        self.ready = self.name in self.service.engine.variants
        return self.ready

    async def predict(
        self,
        payload: dict | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("expected a V2 inference request with a 'text' BYTES input")
        text = _single_element(payload, "text", required=True)
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput("input 'text' is not valid UTF-8") from None
        audio_prompt = _audio_prompt(payload)
        params = parameter_values(payload.parameters)
        params.pop("binary_data_output", None)  # kserve's own REST switch, not a synthesis parameter
        summary = StreamSummary()
        parts: list[np.ndarray] = []
        try:
            async for chunk in self.service.stream(self.name, text, params, audio_prompt, summary=summary):
                parts.append(chunk.samples)
        except SynthesisError as exc:
            raise PredictorError(exc.message, exc.status) from None
        audio = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)
        output = InferOutput(name="audio", shape=[int(audio.size)], datatype="FP32")
        output.set_data_from_numpy(audio, binary_data=False)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=[output],
            parameters={
                "sample_rate": SAMPLE_RATE,
                "speech_tokens": summary.speech_tokens,
                "duration_seconds": str(round(summary.duration_seconds, 6)),
                "seed": summary.seed,
            },
            from_grpc=payload.from_grpc,
            requested_outputs=payload.request_outputs,
            use_binary_outputs=payload.use_binary_outputs,
        )
