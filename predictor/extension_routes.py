"""The V2 protocol extensions the predictor adds to kserve's FastAPI app: streaming audio (SSE,
contract/stream.py) and server info.

kserve 0.21 has no gRPC streaming, so streaming is an HTTP route in the style of the V2
generate_stream extension. Errors found before the first chunk are plain HTTP errors.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from contract import __version__
from contract.errors import ServiceError
from contract.params import PARAMETERS
from contract.stream import (
    MEDIA_TYPE,
    STREAM_PATH,
    ChunkEvent,
    DoneEvent,
    ErrorEvent,
    GenerateStreamRequest,
    encode_event,
)
from contract.variants import SAMPLE_RATE

from .errors import install_rest_handler
from .service import StreamSummary, SynthesisService


def parameter_declarations(variants: list[str]) -> dict[str, dict]:
    """The synthesis parameters each loaded model takes, from the shared table."""
    declared = {}
    for p in PARAMETERS:
        entry: dict = {"type": p.type.__name__, "description": p.description, "used_by": list(p.variants)}
        if p.choices is not None:
            entry["choices"] = list(p.choices)
        if p.low is not None:
            entry["minimum"] = p.low
        if p.high is not None:
            entry["maximum"] = p.high
        entry["default"] = {variant: p.default_for(variant) for variant in variants}
        declared[p.name] = entry
    return declared


def add_routes(app: FastAPI, service: SynthesisService) -> None:
    install_rest_handler(app)

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
            "parameters": parameter_declarations(list(engine.variants)),
            # Each loaded model's [tags], read from its tokenizer (contract/tags.py): the adapter's
            # /api/parameters and its check of scripts before the first segment use them.
            "tags": {name: list(loaded.tags) for name, loaded in engine.variants.items()},
        }

    @app.post(STREAM_PATH.replace("{model}", "{model_name}"), tags=["chatterbox"])
    async def generate_stream(model_name: str, body: GenerateStreamRequest) -> StreamingResponse:
        audio_prompt = None
        if body.audio_prompt_b64 is not None:
            try:
                audio_prompt = base64.b64decode(body.audio_prompt_b64, validate=True)
            except (binascii.Error, ValueError):
                raise ServiceError(400, "audio_prompt_b64: not valid base64") from None
        summary = StreamSummary()
        chunks = service.stream(
            model_name, body.text_input, body.parameters, audio_prompt, summary=summary, incremental=body.incremental
        )
        first = await anext(chunks, None)  # a ServiceError here is a plain HTTP error

        async def events() -> AsyncIterator[bytes]:
            chunk = first
            try:
                while chunk is not None:
                    yield encode_event(ChunkEvent.from_samples(chunk.index, chunk.samples, chunk.final))
                    chunk = await anext(chunks, None)
                yield encode_event(
                    DoneEvent(
                        chunks=summary.chunks,
                        duration_seconds=summary.duration_seconds,
                        speech_tokens=summary.speech_tokens,
                        seed=summary.seed,
                    )
                )
            except ServiceError as exc:
                yield encode_event(ErrorEvent(code=exc.status, message=exc.message))
            finally:
                await chunks.aclose()

        return StreamingResponse(
            events(), media_type=MEDIA_TYPE, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
