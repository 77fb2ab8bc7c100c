"""Routes the predictor adds to kserve's FastAPI app: streaming audio (SSE) and server info.

kserve 0.21 has no gRPC streaming, so streaming is an HTTP route in the style of the V2
generate_stream extension. Errors found before the first chunk are plain HTTP errors.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from . import __version__
from .engine.engine import SAMPLE_RATE
from .model import PredictorError
from .service import StreamSummary, SynthesisError, SynthesisService
from .shutdown import RETRY_AFTER_S


class GenerateStreamRequest(BaseModel):
    text_input: str = Field(description="The text to speak (UTF-8)")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Same names as the V2 infer parameters")
    audio_prompt_b64: str | None = Field(default=None, description="Base64 bytes of a reference audio file")
    incremental: bool = Field(
        default=True,
        description=(
            "true: chunks as speech tokens arrive; false: one chunk per text piece, each exactly what "
            "infer (and upstream generate()) makes, at a lower total cost"
        ),
    )


def _event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def add_routes(app: FastAPI, service: SynthesisService) -> None:
    async def predictor_error_handler(_: Request, exc: PredictorError) -> JSONResponse:
        retry = {"Retry-After": str(RETRY_AFTER_S)} if exc.http_status in (429, 503) else None
        return JSONResponse(status_code=exc.http_status, content={"error": exc.message}, headers=retry)

    app.add_exception_handler(PredictorError, predictor_error_handler)

    @app.get("/v2/chatterbox/info", tags=["chatterbox"])
    async def info() -> dict:
        engine = service.engine
        return {
            "loaded_models": list(engine.variants),
            "device": engine.device,
            "version": __version__,
            "sample_rate": SAMPLE_RATE,
            "ready": engine.ready and not service.drain.draining,
            "max_concurrent_requests": service.capacity,
            "max_text_length": engine.settings.max_text_length,
            "max_new_tokens": engine.settings.max_new_tokens,
        }

    @app.post("/v2/models/{model_name}/generate_stream", tags=["chatterbox"])
    async def generate_stream(model_name: str, body: GenerateStreamRequest) -> StreamingResponse:
        audio_prompt = None
        if body.audio_prompt_b64 is not None:
            try:
                audio_prompt = base64.b64decode(body.audio_prompt_b64, validate=True)
            except (binascii.Error, ValueError):
                raise PredictorError("audio_prompt_b64: not valid base64", 400) from None
        summary = StreamSummary()
        chunks = service.stream(
            model_name, body.text_input, body.parameters, audio_prompt, summary=summary, incremental=body.incremental
        )
        try:
            first = await anext(chunks, None)
        except SynthesisError as exc:
            raise PredictorError(exc.message, exc.status) from None

        async def events() -> AsyncIterator[bytes]:
            chunk = first
            try:
                while chunk is not None:
                    yield _event(
                        {
                            "type": "chunk",
                            "index": chunk.index,
                            "sample_rate": SAMPLE_RATE,
                            "final": chunk.final,
                            "audio_b64": base64.b64encode(chunk.samples.astype("<f4").tobytes()).decode(),
                        }
                    )
                    chunk = await anext(chunks, None)
                yield _event(
                    {
                        "type": "done",
                        "chunks": summary.chunks,
                        "duration_seconds": summary.duration_seconds,
                        "speech_tokens": summary.speech_tokens,
                        "seed": summary.seed,
                    }
                )
            except SynthesisError as exc:
                yield _event({"type": "error", "code": exc.status, "message": exc.message})
            finally:
                await chunks.aclose()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
