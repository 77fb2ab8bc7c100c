"""Request, response and WebSocket message models (the public contract, see docs/adapter-api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from contract.params import BY_NAME, PARAMETERS, Parameter
from contract.text import unpaired_surrogate_message
from contract.variants import SAMPLE_RATE, TURBO_MIN_REFERENCE_SECONDS, VariantName

ModelName = VariantName

# Documented ranges, quoted in validation messages so a client learns the whole range at once.
RANGES = {
    **{p.name: p.documented_range for p in PARAMETERS},
    "sample_rate": "8000-48000",
    "chunk_size_ms": "10-5000",
}

# Both spellings reach the same encoder; the canonical names are what responses report.
_FORMAT_ALIASES = {"pcm": "pcm_s16le"}
# Output formats (encoders in adapter/codecs.py). Rates: opus 8/12/16/24/48 kHz; mp3 and aac the
# MPEG rates from 8 to 48 kHz; wav, pcm_s16le and flac any rate the API accepts.
AudioFormat = Literal["wav", "pcm_s16le", "mp3", "opus", "aac", "flac"]
_FORMATS_DOC = "wav, pcm_s16le (alias: pcm; raw little-endian 16-bit mono), mp3, opus (Ogg Opus), aac (ADTS) or flac"


def first_surrogate(value: Any, path: str) -> str | None:
    """A message for the first string (key or value) in a JSON document holding an unpaired surrogate."""
    if isinstance(value, str):
        return unpaired_surrogate_message(path or "body", value)
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            found = first_surrogate(key, f"{inner} (the name)") or first_surrogate(item, inner)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = first_surrogate(item, f"{path}[{index}]")
            if found:
                return found
    return None


class _Strict(BaseModel):
    # Unknown fields are refused so that a misspelt parameter is not silently ignored.
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        # JSON may escape lone UTF-16 surrogates (\ud800) that no encoder accepts downstream: a 400.
        message = first_surrogate(data, "")
        if message:
            raise PydanticCustomError("unpaired_surrogate", message)
        return data


def _description(p: Parameter) -> str:
    used_by = "" if p.documented_variants == "all" else f"; used by {p.documented_variants}"
    return f"{p.description}. Range {p.documented_range}; default {p.documented_default}{used_by}"


def _voice_field(p: Parameter) -> tuple[Any, Any]:
    annotation: Any = p.type if p.default is not None else p.type | None
    return annotation, Field(p.default, ge=p.low, le=p.high, description=_description(p))


class _VoiceOptionsBase(_Strict):
    audio_prompt_path: str | None = Field(
        default=None,
        description="Voice file name in VOICES_DIR, or an absolute path inside it. "
        "Unset: the default voice, else the model's built-in voice.",
        max_length=1024,
    )

    def sampling_parameters(self) -> dict:
        """What the client set: the predictor applies the same table's defaults (per model) to the rest."""
        values = self.model_dump(exclude_unset=True, exclude={"audio_prompt_path"})
        return {name: value for name, value in values.items() if value is not None}


# Voice and sampling parameters, built from the shared table (contract/params.py); language_id is
# a field of the request itself, as in the seed. Type checkers cannot follow create_model's dynamic
# fields, so they see the base class (the fields code reads by name, and sampling_parameters()).
if TYPE_CHECKING:
    VoiceOptions = _VoiceOptionsBase
else:
    VoiceOptions = create_model(
        "VoiceOptions",
        __base__=_VoiceOptionsBase,
        __doc__="Voice and sampling parameters (ranges and defaults from the shared parameter table).",
        **{p.name: _voice_field(p) for p in PARAMETERS if p.name != "language_id"},
    )

_LANGUAGE = BY_NAME["language_id"]


class _AudioBase(_Strict):
    sample_rate: int = Field(
        default=SAMPLE_RATE, ge=8000, le=48000, description=f"Output rate; resampled from the model's {SAMPLE_RATE} Hz"
    )

    @field_validator("format", mode="before", check_fields=False)
    @classmethod
    def _canonical_format(cls, value: object) -> object:
        if isinstance(value, str):
            return _FORMAT_ALIASES.get(value.lower(), value.lower())
        return value


class HttpAudioOptions(_AudioBase):
    format: AudioFormat = Field(default="wav", description=_FORMATS_DOC)
    stream: bool = Field(
        default=False, description="Send audio with chunked transfer as it is generated (flac: whole, at the end)"
    )
    chunk_size_ms: int | None = Field(
        default=None, ge=10, le=5000, description="Streaming wav/pcm_s16le only: re-chunk to this duration"
    )


class WsAudioOptions(_AudioBase):
    format: AudioFormat = Field(default="pcm_s16le", description=_FORMATS_DOC)
    stream: bool = Field(default=True, description="false: one chunk with all the audio once it is generated")
    chunk_size_ms: int = Field(
        default=40, ge=10, le=5000, description="wav/pcm_s16le: duration of each chunk (compressed: as encoded)"
    )


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("text must not be empty")
    return value


# The longest pause a segment may ask for after itself.
MAX_PAUSE_MS = 10_000
_PAUSE_DOC = f"Silence after the segment, in milliseconds (0-{MAX_PAUSE_MS}); none after the last segment"


def _language_field(default: str | None) -> Any:
    # Checked against the model (contract.params.check_language) so that a bad code is a 400, not a 422.
    return Field(
        default,
        max_length=16,
        description=_description(_LANGUAGE),
        json_schema_extra={"enum": list(_LANGUAGE.choices or ())},
    )


class ScriptSegment(_Strict):
    """One entry of `segments`: unset fields take the request's value."""

    text: str = Field(..., description="Text of this segment (all segments together: at most MAX_TEXT_LENGTH)")
    voice: VoiceOptions | None = Field(
        None, description="The request's voice object; the fields set here replace the request's voice fields"
    )
    model: ModelName | None = Field(None, description="Model variant for this segment (default: the request's)")
    language_id: str | None = _language_field(None)
    pause_ms: int | None = Field(None, ge=0, le=MAX_PAUSE_MS, description=_PAUSE_DOC + " (default: the request's)")

    _text_not_blank = field_validator("text")(_not_blank)


class _TextRequest(_Strict):
    text: str | None = Field(
        None, description="Text to speak (at most MAX_TEXT_LENGTH characters); or send `segments` instead"
    )
    segments: list[ScriptSegment] | None = Field(
        None,
        description="A script instead of `text`: segments spoken in order into one stream, each in its own "
        "voice and model, with a pause after it; loudness matched between them",
    )
    pause_ms: int = Field(0, ge=0, le=MAX_PAUSE_MS, description=_PAUSE_DOC + " (segments only: their default)")
    model: ModelName = Field("standard", description="Model variant; it must be loaded by the predictor")
    language_id: str | None = _language_field(_LANGUAGE.default)
    voice: VoiceOptions = Field(default_factory=VoiceOptions)

    _text_not_blank = field_validator("text")(_not_blank)

    @model_validator(mode="after")
    def _text_or_segments(self) -> _TextRequest:
        if (self.text is None) == (self.segments is None):
            raise ValueError("send either `text` or `segments` (a list of {text, voice, model, pause_ms})")
        if self.segments is not None and not self.segments:
            raise ValueError("`segments` must hold at least one segment")
        return self


class TTSRequest(_TextRequest):
    audio: HttpAudioOptions = Field(default_factory=HttpAudioOptions)


class SayMessage(_TextRequest):
    type: Literal["say"]
    id: str | int | None = Field(None, description="Request id echoed in chunk/done/error messages")
    audio: WsAudioOptions = Field(default_factory=WsAudioOptions)


class SetVoiceMessage(_Strict):
    type: Literal["set_voice"]
    id: str | int | None = None
    voice_path: str | None = Field(
        ..., max_length=1024, description="Voice for this connection; null: back to the default"
    )
    persist: bool = Field(False, description="Also make it the shared default voice (like POST /api/voice/default)")


# --- WebSocket messages from the server ---------------------------------------------------------

RequestId = str | int | None


class ReadyMessage(BaseModel):
    type: Literal["ready"] = "ready"
    models: list[str]
    device: str | None


class ChunkMessage(BaseModel):
    type: Literal["chunk"] = "chunk"
    id: RequestId
    index: int
    data: str = Field(description="base64 audio in the requested format (wav: chunk 0 starts with the header)")
    is_last: bool


class SegmentSpan(BaseModel):
    index: int = Field(description="The segment's place in the request's `segments` (or its SSML)")
    start_seconds: float = Field(description="Where its speech starts in the audio")
    end_seconds: float = Field(description="Where its speech ends (the pause after it follows)")


class DoneMessage(BaseModel):
    type: Literal["done"] = "done"
    id: RequestId
    duration_seconds: float
    segments: list[SegmentSpan] | None = Field(
        None, description="Scripts only (segments or SSML): where each segment lies in the audio"
    )


class VoiceSetMessage(BaseModel):
    type: Literal["voice_set"] = "voice_set"
    id: RequestId = None
    voice_path: str | None
    persisted: bool


class ErrorMessage(BaseModel):
    type: Literal["error"] = "error"
    id: RequestId
    code: int | str
    message: str


WS_MESSAGES = (SayMessage, SetVoiceMessage, ReadyMessage, ChunkMessage, DoneMessage, VoiceSetMessage, ErrorMessage)


class SetDefaultVoice(_Strict):
    voice_path: str | None = Field(
        ..., max_length=1024, description="Voice name in VOICES_DIR; null clears the default"
    )


class DefaultVoice(BaseModel):
    voice_path: str | None = Field(
        description="Current default voice (relative to VOICES_DIR), or null for the built-in voice"
    )
    source: Literal["api", "env"] | None = Field(
        description="api: set through this API (shared file); env: DEFAULT_VOICE"
    )


class VoiceInfo(BaseModel):
    name: str = Field(description="Name to use as voice_path / audio_prompt_path")
    size_bytes: int
    duration_seconds: float | None
    sample_rate: int | None
    channels: int | None = None
    turbo_ok: bool = Field(
        description=f"Long enough (> {TURBO_MIN_REFERENCE_SECONDS:g} s) to be a turbo reference voice"
    )


class VoiceList(BaseModel):
    voices: list[VoiceInfo]
    default_voice: str | None


class UploadResult(VoiceInfo):
    overwritten: bool
    format: str


class Health(BaseModel):
    status: str = Field(description="healthy, predictor_unavailable, predictor_not_ready or shutting_down")
    loaded_models: list[str]
    device: str | None
    version: str
    error: dict | None = Field(None, description="Present when status is not healthy")


class ErrorDetail(BaseModel):
    code: int | str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail
