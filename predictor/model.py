"""The KServe model: one instance per loaded variant, answering V2 infer over REST and gRPC."""

from __future__ import annotations

import base64
import binascii
import math
import struct
import uuid
from typing import Any

import numpy as np
from kserve import InferRequest, InferResponse, Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput

from contract.errors import ServiceError
from contract.variants import SAMPLE_RATE

from .errors import for_transport
from .service import StreamSummary, SynthesisService

# kserve's own REST switch for binary outputs, not a synthesis parameter.
_KSERVE_PARAMETERS = ("binary_data_output",)


def parameter_values(parameters: Any) -> dict[str, Any]:
    """Plain values from REST parameters (a dict) or gRPC ones (InferParameter messages)."""
    if parameters is None:
        return {}
    if not hasattr(parameters, "items"):
        raise InvalidInput(f"parameters must be an object of name: value, got {type(parameters).__name__}")
    values: dict[str, Any] = {}
    for name, value in parameters.items():
        if hasattr(value, "WhichOneof"):
            choice = value.WhichOneof("parameter_choice")
            value = getattr(value, choice) if choice else None
        values[name] = value
    return values


def _single_element(request: InferRequest, name: str, required: bool) -> bytes | str | None:
    """The one element of a BYTES input: `bytes` over gRPC, `str` when it came as JSON text over REST.
    Any disagreement between shape, datatype and data is the client's: a 400 naming the input."""
    tensor = request.get_input_by_name(name)
    if tensor is None:
        if required:
            raise InvalidInput(f"input '{name}' is required (BYTES, shape [1])")
        return None
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input '{name}' must have datatype BYTES, got {tensor.datatype}")
    shape = list(tensor.shape) if isinstance(tensor.shape, (list, tuple)) else tensor.shape
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or math.prod(shape) != 1
    ):
        raise InvalidInput(f"input '{name}' must have shape [1] (one element), got {shape}")
    try:
        data = tensor.as_numpy().reshape(-1)
    except (ValueError, TypeError, OverflowError, struct.error) as exc:
        raise InvalidInput(
            f"input '{name}': the data does not match shape {shape} and datatype BYTES ({exc})"
        ) from None
    if data.size != 1:
        raise InvalidInput(f"input '{name}' must hold one element, got {data.size}")
    value = data[0]
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return bytes(value)
    raise InvalidInput(f"input '{name}' must hold a string, got {type(value).__name__}")


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


class ChatterboxModel(Model):
    def __init__(self, name: str, service: SynthesisService):
        super().__init__(name)
        self.service = service
        self.ready = name in service.engine.variants

    def get_input_types(self) -> list[dict]:
        # The synthesis parameters (contract/params.py) are request parameters, not tensors; V2 model
        # metadata has no place for them, so /v2/chatterbox/info lists them.
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
        for name in _KSERVE_PARAMETERS:
            params.pop(name, None)
        summary = StreamSummary()
        parts: list[np.ndarray] = []
        try:
            async for chunk in self.service.stream(self.name, text, params, audio_prompt, summary=summary):
                parts.append(chunk.samples)
        except ServiceError as exc:
            raise for_transport(exc, bool(payload.from_grpc)) from None
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
