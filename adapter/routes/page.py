"""The page at `/` (adapter/web: plain HTML, JS and CSS, no build step, nothing from a CDN) and the
parameter table it draws its controls from, so that no range or default is restated in JavaScript."""

from __future__ import annotations

import typing
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from adapter.auth import require_token
from adapter.codecs import FORMATS
from adapter.routes import get_ctx
from adapter.schemas import WsAudioOptions
from adapter.synthesis import AppContext
from contract.errors import ServiceError
from contract.params import BY_NAME, PARAMETERS
from contract.variants import SAMPLE_RATE, VARIANT_NAMES

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    # No token needed to load the page: it asks for one when the API answers 401.
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get(
    "/api/parameters",
    tags=["service"],
    summary="The synthesis parameters: type, range, default per model (the table the page is built from)",
    dependencies=[Depends(require_token)],
)
async def parameters(ctx: AppContext = Depends(get_ctx)) -> dict[str, object]:
    try:
        tags = (await ctx.predictor.info()).get("tags")
    except ServiceError:
        tags = None  # the page still draws its controls; the tag buttons wait for a reload
    return parameter_table(tags if isinstance(tags, dict) else {})


def parameter_table(tags: dict[str, list[str]]) -> dict[str, object]:
    """contract.params.PARAMETERS as JSON: the numeric parameters become controls; language_id's codes
    and models become the language picker. `tags`: each loaded model's [tags], as the predictor read
    them from its tokenizer (contract/tags.py); empty while the predictor cannot answer."""
    language = BY_NAME["language_id"]
    return {
        "parameters": [
            {
                "name": p.name,
                "type": p.type.__name__,
                "minimum": p.low,
                "maximum": p.high,
                "default": {model: p.default_for(model) for model in VARIANT_NAMES},
                "models": list(p.variants),
                "description": p.description,
            }
            for p in PARAMETERS
            if p.type in (int, float)
        ],
        "languages": list(language.choices or ()),
        "default_language": language.default,
        "language_models": list(language.variants),
        # The page plays chunks as they arrive with Web Audio, which needs PCM (raw or in a WAV stream).
        "formats": [
            name
            for name in typing.get_args(WsAudioOptions.model_fields["format"].annotation)
            if FORMATS[name].container is None
        ],
        "default_format": WsAudioOptions.model_fields["format"].default,
        # Raw PCM carries no rate: the page plays it at the rate a `say` without sample_rate gets.
        "sample_rate": SAMPLE_RATE,
        "tags": tags,
    }
