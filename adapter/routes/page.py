"""The page at `/` (adapter/web: plain HTML, JS and CSS, no build step, nothing from a CDN) and the
parameter table it draws its controls from, so that no range or default is restated in JavaScript."""

from __future__ import annotations

import typing
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from adapter.auth import require_token
from adapter.schemas import VoiceOptions, WsAudioOptions
from predictor.engine.params import parse_params
from predictor.engine.variants import MULTILINGUAL_LANGUAGES, VARIANT_NAMES

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
async def parameters() -> dict:
    return parameter_table()


def parameter_table() -> dict:
    defaults = {model: parse_params(model, {}, max_new_tokens_ceiling=1) for model in VARIANT_NAMES}
    table = []
    for name, field in VoiceOptions.model_fields.items():
        if name == "audio_prompt_path":
            continue
        bounds = {type(m).__name__: m for m in field.metadata}
        kind = next(a for a in typing.get_args(field.annotation) if a is not type(None))
        table.append(
            {
                "name": name,
                "type": kind.__name__,
                "minimum": bounds["Ge"].ge if "Ge" in bounds else None,
                "maximum": bounds["Le"].le if "Le" in bounds else None,
                "default": {
                    model: None if name == "max_new_tokens" else getattr(values, name)
                    for model, values in defaults.items()
                },
                "models": list(VARIANT_NAMES),
                "description": field.description,
            }
        )
    return {
        "parameters": table,
        "languages": list(MULTILINGUAL_LANGUAGES),
        "language_models": ["multilingual"],  # the models that take language_id
        "formats": list(typing.get_args(WsAudioOptions.model_fields["format"].annotation)),
        "default_format": WsAudioOptions.model_fields["format"].default,
    }
