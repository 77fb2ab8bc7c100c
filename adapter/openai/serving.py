"""Logic of the OpenAI-compatible routes: model names to Chatterbox variants, voice names to the
voice library, an OpenAI request to the seed API's request, and the streamed bodies (audio, SSE)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from pydantic import BaseModel

from adapter.errors import APIError
from adapter.openai.protocol import (
    CHATTERBOX_PARAMETERS,
    OPENAI_VOICES,
    ErrorInfo,
    ModelCard,
    SpeechAudioDelta,
    SpeechAudioDone,
    SpeechRequest,
    SpeechStreamError,
    SpeechUsage,
    VoiceEntry,
    VoiceId,
)
from adapter.request import Output, Segment, SynthesisRequest
from adapter.schemas import ModelName
from adapter.seed_requests import segment_spans
from adapter.ssml import is_ssml, ssml_segments
from adapter.synthesis import relay
from adapter.transport import audio_bytes
from contract.errors import ServiceError
from contract.variants import SAMPLE_RATE

if TYPE_CHECKING:
    from adapter.predictor_client import PredictorClient
    from adapter.synthesis import Synthesis
    from adapter.voice_library import VoiceLibrary

VARIANTS: tuple[str, ...] = get_args(ModelName)
TRANSPORT = "openai"  # the `transport` label of the adapter's synthesis metrics

# OpenAI model name -> Chatterbox variants in order of preference; the first loaded one serves it.
DEFAULT_MODEL_MAP: dict[str, tuple[str, ...]] = {
    "tts-1": ("turbo", "standard"),
    "tts-1-hd": ("standard",),
    "gpt-4o-mini-tts": ("standard",),
    "gpt-4o-mini-tts-2025-12-15": ("standard",),
}

_LOADED_TTL_S = 5.0  # how long the predictor's list of loaded variants is reused


def parse_model_map(raw: str | None) -> dict[str, tuple[str, ...]]:
    """OPENAI_MODEL_MAP: a JSON object of name -> variant or [variants in order of preference],
    laid over DEFAULT_MODEL_MAP. Raises ValueError naming the problem (a configuration error)."""
    mapping = dict(DEFAULT_MODEL_MAP)
    if not raw or not raw.strip():
        return mapping
    try:
        given = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"OPENAI_MODEL_MAP is not valid JSON: {exc}") from None
    if not isinstance(given, dict):
        raise ValueError('OPENAI_MODEL_MAP must be a JSON object, e.g. {"tts-1": ["turbo", "standard"]}')
    for name, target in given.items():
        targets = [target] if isinstance(target, str) else target
        if not isinstance(targets, list) or not targets or not all(t in VARIANTS for t in targets):
            raise ValueError(
                f"OPENAI_MODEL_MAP[{name!r}] must be a variant or a list of variants ({', '.join(VARIANTS)})"
            )
        if name in VARIANTS:
            raise ValueError(f"OPENAI_MODEL_MAP cannot redefine the variant name {name!r}")
        mapping[name] = tuple(targets)
    return mapping


class ModelResolver:
    """Maps requested model names to loaded variants, with the predictor's list of loaded variants
    cached briefly (one info call per few seconds, not per request)."""

    def __init__(self, mapping: Mapping[str, tuple[str, ...]], predictor: PredictorClient):
        self._mapping = dict(mapping)
        self._predictor = predictor
        self._loaded: tuple[float, list[str]] | None = None

    async def loaded(self) -> list[str]:
        now = time.monotonic()
        if self._loaded is None or now - self._loaded[0] > _LOADED_TTL_S:
            try:
                info = await self._predictor.info()
            except ServiceError as exc:
                raise relay(exc) from None  # a 503 keeps its Retry-After
            self._loaded = (now, [m for m in info.get("loaded_models") or [] if m in VARIANTS])
        return self._loaded[1]

    def served(self, loaded: list[str]) -> list[ModelCard]:
        cards = []
        for name, targets in self._mapping.items():
            variant = next((t for t in targets if t in loaded), None)
            if variant:
                cards.append(ModelCard(id=name, variant=variant))
        return cards + [ModelCard(id=v, variant=v) for v in loaded]

    async def resolve(self, name: str) -> str:
        loaded = await self.loaded()
        targets = (name,) if name in VARIANTS else self._mapping.get(name, ())
        variant = next((t for t in targets if t in loaded), None)
        if variant is None:
            served = ", ".join(card.id for card in self.served(loaded)) or "none (no variant is loaded)"
            raise APIError(400, f"model '{name}' is not served here; served models: {served}")
        return variant


def resolve_voice(voices: VoiceLibrary, voice: str | VoiceId) -> str | None:
    """A library voice (name relative to VOICES_DIR), or None for the default voice.

    The library wins: a file named like an OpenAI voice (alloy.wav) is used for "alloy".
    """
    name = voice.id if isinstance(voice, VoiceId) else voice
    try:
        return voices.resolve_named(name)
    except APIError as exc:
        if exc.status != 404:
            raise
    if name.lower() in OPENAI_VOICES:
        return None
    raise APIError(
        400,
        f"voice '{name}' is neither in the voice library nor an OpenAI voice name; GET /v1/audio/voices lists them",
    )


def list_voices(voices: VoiceLibrary) -> list[VoiceEntry]:
    entries = [VoiceEntry(id=v["name"], name=Path(v["name"]).stem, library=True) for v in voices.list_voices()]
    library_stems = {entry.name.lower() for entry in entries}
    entries += [VoiceEntry(id=name, name=name, library=False) for name in OPENAI_VOICES if name not in library_stems]
    return entries


def speech_request(body: SpeechRequest, variant: str, voice: str | None) -> SynthesisRequest:
    """The synthesis an OpenAI request asks for. Only the parameters the client set are passed on,
    so the predictor applies each model's own defaults. The codec works at OpenAI's 24 kHz, pcm included."""
    chosen = body.model_dump(include=set(CHATTERBOX_PARAMETERS) & body.model_fields_set)
    language = chosen.pop("language_id", None)
    segment = Segment(text=body.input, model=variant, language_id=language, voice=voice, parameters=chosen)
    segments: tuple[Segment, ...] = (segment,)
    rate, scripted = None, is_ssml(body.input)
    if scripted:  # auto-detected: `input` is a string either way
        segments, rate = ssml_segments(body.input, segment)
    output = Output(codec_format(body.response_format), SAMPLE_RATE, body.stream, speed=body.speed * (rate or 1.0))
    return SynthesisRequest(segments=segments, output=output, transport=TRANSPORT, scripted=scripted)


def codec_format(response_format: str) -> str:
    return "pcm_s16le" if response_format == "pcm" else response_format


def error_info(status: int, message: str, param: str | None = None) -> ErrorInfo:
    """OpenAI's error object; `type` and `code` follow what OpenAI's API sends for each status."""
    if status == 401:
        return ErrorInfo(message=message, type="invalid_request_error", param=param, code="invalid_api_key")
    if status == 429:
        return ErrorInfo(message=message, type="rate_limit_error", param=param, code="rate_limit_exceeded")
    if status >= 500:
        return ErrorInfo(message=message, type="server_error", param=param, code=None)
    return ErrorInfo(message=message, type="invalid_request_error", param=param, code=None)


def usage(text: str, synthesis: Synthesis) -> SpeechUsage:
    speech_tokens = synthesis.usage_tokens()
    return SpeechUsage(input_tokens=len(text), output_tokens=speech_tokens, total_tokens=len(text) + speech_tokens)


async def sse_events(synthesis: Synthesis, text: str) -> AsyncGenerator[bytes, None]:
    """speech.audio.delta events carrying the encoded stream, then speech.audio.done with usage.
    A failure after the first event becomes an `error` event before the stream breaks off."""
    try:
        async for data in audio_bytes(synthesis):
            yield _sse(SpeechAudioDelta(audio=base64.b64encode(data).decode("ascii")))
    except APIError as exc:
        yield _sse(SpeechStreamError(error=error_info(exc.status, exc.message)))
        raise
    timings = synthesis.timings
    spans = segment_spans(timings)
    done = SpeechAudioDone(usage=usage(text, synthesis), segments=spans)
    yield _sse(done, exclude_none=True)


def _sse(event: BaseModel, exclude_none: bool = False) -> bytes:
    return f"data: {event.model_dump_json(exclude_none=exclude_none)}\n\n".encode()
