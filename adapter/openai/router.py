"""Transport of the OpenAI-compatible routes: HTTP handlers, OpenAI's error shape, streaming bodies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapter.codecs import FORMATS, MAX_SPEED, MIN_SPEED, Encoder
from adapter.errors import APIError, describe_validation_errors
from adapter.openai import serving
from adapter.openai.protocol import (
    AudioModel,
    AudioModelList,
    ErrorResponse,
    ModelCard,
    ModelList,
    SpeechRequest,
    VoiceListResponse,
)
from adapter.routes import get_ctx
from adapter.routes.tts import ClientGone, SynthesisStreamingResponse, _unless_disconnected
from adapter.schemas import RANGES
from adapter.synthesis import AppContext, Synthesis
from contract.variants import SAMPLE_RATE

log = logging.getLogger("adapter.openai")
_RANGES = {**RANGES, "speed": f"{MIN_SPEED:g}-{MAX_SPEED:g}"}


def openai_error(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = ErrorResponse(error=serving.error_info(status, message, param))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class OpenAIRoute(APIRoute):
    """Every failure on these routes, authentication and validation included, answers in OpenAI's
    shape {"error": {"message", "type", "param", "code"}}, so OpenAI clients raise with our message.
    Validation failures are 400s, as on OpenAI's API."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except APIError as exc:
                return openai_error(exc.status, exc.message, headers=exc.headers)
            except RequestValidationError as exc:
                errors = list(exc.errors())
                _, message = describe_validation_errors(errors, _RANGES)
                loc = [str(p) for p in (errors[0].get("loc", ()) if errors else ()) if p != "body"]
                return openai_error(400, message, param=".".join(loc[:1]) or None)
            except StarletteHTTPException as exc:
                return openai_error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                return openai_error(500, "internal server error")

        return route


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 429, 502, 503, 504)
}
_AUDIO: dict[str, dict[str, Any]] = {**{fmt.media_type: {} for fmt in FORMATS.values()}, "text/event-stream": {}}


def build_router(model_map: str | None) -> APIRouter:
    """`model_map`: the OPENAI_MODEL_MAP setting; a bad one raises ValueError at start-up."""
    mapping = serving.parse_model_map(model_map)
    router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
    made: list[serving.ModelResolver] = []

    def resolver(ctx: AppContext) -> serving.ModelResolver:
        # Each application builds its own router; its resolver needs the app's predictor client.
        if not made:
            made.append(serving.ModelResolver(mapping, ctx.predictor))
        return made[0]

    @router.post(
        "/audio/speech",
        summary="OpenAI-compatible speech synthesis",
        response_class=Response,
        responses={200: {"content": _AUDIO, "description": "Audio in response_format, or SSE"}, **_ERRORS},
    )
    async def create_speech(body: SpeechRequest, request: Request, ctx: AppContext = Depends(get_ctx)) -> Response:
        if body.stream_format == "sse" and not body.stream:
            raise APIError(400, "stream_format 'sse' streams by definition; drop stream=false")
        variant = await resolver(ctx).resolve(body.model)
        voice = serving.resolve_voice(ctx.voices, body.voice)
        seed = serving.seed_request(body, variant, voice, streaming=body.stream)
        fmt = serving.codec_format(body.response_format)
        # Made before admission: an encoder that cannot be built must not cost a slot.
        # OpenAI's outputs are 24 kHz mono, pcm included.
        encoder = Encoder(fmt, SAMPLE_RATE, streaming=body.stream, speed=body.speed)
        synthesis = Synthesis(ctx, seed, "openai")
        try:
            if not body.stream:
                return await _whole(request, synthesis, encoder)
            chunks = synthesis.chunks()
            # Waiting for the first chunk before answering lets early failures keep their HTTP status.
            first = await _unless_disconnected(request, anext(chunks, None))
            stream = serving.chained(first, chunks)
            if body.stream_format == "sse":
                content = serving.sse_events(stream, encoder, synthesis, body.input)
                media_type = "text/event-stream"
            else:
                content = serving.encoded_audio(stream, encoder)
                media_type = encoder.media_type
            return SynthesisStreamingResponse(
                synthesis, encoder, content, media_type=media_type, headers={"Cache-Control": "no-cache"}
            )
        except ClientGone:
            await synthesis.close("cancelled")
            return Response(status_code=499)
        except BaseException:
            await synthesis.close("error")
            raise

    @router.get("/models", response_model=ModelList, summary="Model names served", responses=_ERRORS)
    async def list_models(ctx: AppContext = Depends(get_ctx)) -> ModelList:
        models = resolver(ctx)
        return ModelList(data=models.served(await models.loaded()))

    @router.get(
        "/models/{model_id}",
        response_model=ModelCard,
        summary="One model name",
        responses={404: {"model": ErrorResponse, "description": "No such model is served"}, **_ERRORS},
    )
    async def get_model(model_id: str, ctx: AppContext = Depends(get_ctx)) -> ModelCard:
        models = resolver(ctx)
        for card in models.served(await models.loaded()):
            if card.id == model_id:
                return card
        raise APIError(404, f"model '{model_id}' is not served here")

    @router.get(
        "/audio/models", response_model=AudioModelList, summary="Model names (Open WebUI's shape)", responses=_ERRORS
    )
    async def list_audio_models(ctx: AppContext = Depends(get_ctx)) -> AudioModelList:
        models = resolver(ctx)
        return AudioModelList(models=[AudioModel(id=card.id) for card in models.served(await models.loaded())])

    @router.get("/audio/voices", response_model=VoiceListResponse, summary="Voices to use", responses=_ERRORS)
    async def list_voices(ctx: AppContext = Depends(get_ctx)) -> VoiceListResponse:
        # Probing files touches the disk (maybe a network volume): keep it off the event loop.
        return VoiceListResponse(voices=await run_in_threadpool(serving.list_voices, ctx.voices))

    return router


async def _whole(request: Request, synthesis: Synthesis, encoder: Encoder) -> Response:
    async def collect() -> list[np.ndarray]:
        return [chunk.samples async for chunk in synthesis.chunks()]

    pieces = await _unless_disconnected(request, collect())
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    data = await asyncio.to_thread(encoder.encode, audio, True)  # compressing a long text takes a while
    await synthesis.close("ok", encoder.duration_seconds)
    return Response(data, media_type=encoder.media_type)
