"""Transport of the OpenAI-compatible routes: HTTP handlers, OpenAI's error shape, streaming bodies."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapter.codecs import FORMATS, MAX_SPEED, MIN_SPEED
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
from adapter.schemas import RANGES
from adapter.synthesis import AppContext, Synthesis
from adapter.transport import SynthesisStreamingResponse, audio_bytes, http_answer

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
        synthesis = Synthesis(ctx, serving.speech_request(body, variant, voice))

        def whole(data: bytes) -> Response:
            return Response(data, media_type=synthesis.encoder.media_type)

        def streamed() -> StreamingResponse:
            if body.stream_format == "sse":
                content, media_type = serving.sse_events(synthesis, body.input), "text/event-stream"
            else:
                content, media_type = audio_bytes(synthesis), synthesis.encoder.media_type
            return SynthesisStreamingResponse(
                synthesis, content, media_type=media_type, headers={"Cache-Control": "no-cache"}
            )

        return await http_answer(request, synthesis, whole, streamed)

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
