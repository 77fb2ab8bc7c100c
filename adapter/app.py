"""Application factory: wires settings, the predictor client, the voice library and the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapter import __version__
from adapter.auth import require_token
from adapter.discovery import PredictorLocator, make_locator
from adapter.errors import install_error_handlers
from adapter.limits import HeaderSizeLimit, SlotPool
from adapter.metrics import Metrics, RequestMetricsMiddleware
from adapter.openai import build_router as openai_router
from adapter.predictor_client import PredictorClient, StreamBounds
from adapter.routes import health, page, tts, voices, ws
from adapter.schemas import RANGES, WS_MESSAGES
from adapter.settings import Settings
from adapter.shutdown import Drain
from adapter.synthesis import AppContext
from adapter.voice_library import VoiceLibrary
from adapter.wyoming import serve_wyoming

DESCRIPTION = """
HTTP and WebSocket API for Chatterbox TTS, in front of a KServe predictor.

When `API_TOKEN` is set, every route except `/health` needs `Authorization: Bearer <token>`.
Errors always have the shape `{"error": {"code": <HTTP status>, "message": "..."}}`.

## WebSocket `/ws/tts`

Authentication: the `Authorization` header or `?token=<token>`; a bad token closes with 1008.

Message models: `SayMessage`, `SetVoiceMessage` (client → server) and `ReadyMessage`,
`ChunkMessage`, `DoneMessage`, `VoiceSetMessage`, `ErrorMessage` in the schema's components.

Server → client on connect: `{"type": "ready", "models": ["standard"], "device": "cuda"}`.

Client → server:
* `{"type": "say", "id": "r1", "text": "...", "model": "standard", "language_id": "en",
  "voice": {...same as POST /api/tts...},
  "audio": {"format": "pcm_s16le", "sample_rate": 24000, "stream": true, "chunk_size_ms": 40}}`
  → `{"type": "chunk", "id": "r1", "index": 0, "data": "<base64>", "is_last": false}` ... then
  `{"type": "done", "id": "r1", "duration_seconds": 2.5}`.
  `format`: `pcm_s16le` (default; alias `pcm`), `wav` (the first chunk starts with a streaming
  WAV header), `mp3`, `opus`, `aac` (chunks of whole frames/pages) or `flac` (one chunk, at the end).
  `stream: false` sends one chunk with the whole file.
* `{"type": "set_voice", "voice_path": "my_voice.wav"}` → `{"type": "voice_set", "id": null, "voice_path": "my_voice.wav", "persisted": false}`
  (the connection's voice; `"persist": true` also makes it the shared default; `null` resets).

Any bad message → `{"type": "error", "id": <id or null>, "code": 400|404|409|413|422|429|5xx, "message": "..."}`;
the connection stays open. Requests on one connection run concurrently, each under its own id,
within the shared `MAX_CONCURRENT_REQUESTS` slots (`code: 429` when full).
"""


def create_app(settings: Settings, locator: PredictorLocator | None = None) -> FastAPI:
    """`locator` replaces the one the settings imply (PREDICTOR_URL or InferenceService discovery)."""
    metrics = Metrics()
    predictor = PredictorClient(
        locator or make_locator(settings),
        settings.predictor_timeout_s,
        bounds=StreamBounds(settings.first_chunk_timeout_s, settings.chunk_gap_timeout_s),
    )
    slots = SlotPool(settings.max_concurrent_requests)
    ctx = AppContext(
        settings=settings,
        predictor=predictor,
        voices=VoiceLibrary(
            settings.voices_dir, settings.default_voice, settings.voice_min_seconds, settings.voice_max_seconds
        ),
        slots=slots,
        metrics=metrics,
        drain=Drain(settings.drain_timeout_s, in_flight=lambda: slots.in_use),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        predictor.breaker.watch()  # a predictor frozen while this adapter is idle is seen before a request
        async with serve_wyoming(ctx):
            yield
        await predictor.aclose()

    # The stock docs routes cannot take a dependency; they are re-added below behind the token.
    app = FastAPI(
        title="Chatterbox TTS adapter",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.ctx = ctx
    install_error_handlers(app, RANGES)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.add_middleware(HeaderSizeLimit)

    protected = [Depends(require_token)]
    app.include_router(health.router)
    app.include_router(tts.router, dependencies=protected)
    app.include_router(voices.router, dependencies=protected)
    app.include_router(openai_router(settings.openai_model_map), dependencies=protected)
    app.include_router(ws.router)  # its own dependency: WebSocket auth closes with 1008
    app.include_router(_service_router(app, metrics), dependencies=protected)
    app.include_router(page.router)  # the page itself is public; its data routes need the token
    app.mount("/web", StaticFiles(directory=page.WEB_DIR), name="web")
    _document_ws_messages(app)
    return app


def _document_ws_messages(app: FastAPI) -> None:
    """OpenAPI has no WebSocket routes; the message models still belong in the schema."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in WS_MESSAGES:
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


def _service_router(app: FastAPI, metrics: Metrics) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response, tags=["service"])
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    @router.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=app.title)

    return router
