"""Wire models of the OpenAI-compatible routes: the request and response shapes OpenAI documents
for /v1/audio/speech and /v1/models, plus Chatterbox's own parameters as extra body fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from adapter.codecs import MAX_SPEED, MIN_SPEED
from adapter.schemas import SegmentSpan, TTSRequest, VoiceOptions

# OpenAI's built-in voice names. They select the default voice unless the library holds one so named.
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "cedar",
    "coral",
    "echo",
    "fable",
    "marin",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
StreamFormat = Literal["audio", "sse"]


class VoiceId(BaseModel):
    """OpenAI's object form of `voice`."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(..., min_length=1, max_length=1024)


class _SpeechFields(BaseModel):
    # Unknown fields are refused (as OpenAI does), so that a misspelt parameter is not silently ignored.
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        ...,
        min_length=1,
        max_length=128,
        description="tts-1 (turbo if loaded, else standard), tts-1-hd, gpt-4o-mini-tts (standard), "
        "or a variant name: standard, turbo, multilingual. OPENAI_MODEL_MAP changes the mapping.",
    )
    input: str = Field(..., description="Text to speak (at most MAX_TEXT_LENGTH characters)")
    voice: str | VoiceId = Field(
        ...,
        description="A voice in the library, with or without its extension; an OpenAI voice name "
        '(alloy, ash, ...: the default voice unless the library has a voice so named); or {"id": ...}',
    )
    instructions: str | None = Field(
        None,
        max_length=4096,
        description="Accepted for compatibility and ignored: Chatterbox does not follow instructions "
        "(use exaggeration and cfg_weight to shape delivery)",
    )
    response_format: ResponseFormat = Field(
        "mp3", description="mp3 (default), opus (Ogg), aac (ADTS), flac, wav, or pcm (raw 24 kHz 16-bit mono)"
    )
    speed: float = Field(
        1.0, ge=MIN_SPEED, le=MAX_SPEED, description="Tempo, pitch kept (FFmpeg's atempo time-stretch)"
    )
    stream_format: StreamFormat = Field(
        "audio",
        description="audio: encoded bytes with chunked transfer as they are generated (flac: whole, at the "
        "end); sse: speech.audio.delta events with base64 audio, then speech.audio.done with usage",
    )
    stream: bool = Field(
        True,
        description="Kokoro-FastAPI's switch: false sends the whole file once generated, with exact "
        "headers (mp3: a LAME/Xing frame for gapless length). Not with stream_format sse.",
    )

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("input must not be empty")
        return value


def _chatterbox_fields() -> dict:
    """Chatterbox's parameters, with the seed API's names, ranges and descriptions (one definition)."""
    fields = {
        name: (info.annotation, info) for name, info in VoiceOptions.model_fields.items() if name != "audio_prompt_path"
    }
    language = TTSRequest.model_fields["language_id"]
    fields["language_id"] = (language.annotation, language)
    return fields


CHATTERBOX_PARAMETERS = tuple(_chatterbox_fields())

# Type checkers cannot follow create_model's dynamic fields: they see the OpenAI fields of the base.
if TYPE_CHECKING:
    SpeechRequest = _SpeechFields
else:
    SpeechRequest = create_model(
        "SpeechRequest",
        __base__=_SpeechFields,
        __doc__="POST /v1/audio/speech (OpenAI's request, plus Chatterbox's parameters as extra fields)",
        **_chatterbox_fields(),
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "chatterbox"
    variant: str = Field(description="The Chatterbox variant that serves this name")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AudioModel(BaseModel):
    id: str


class AudioModelList(BaseModel):
    """GET /v1/audio/models: the shape Open WebUI reads to fill its model list."""

    models: list[AudioModel]


class VoiceEntry(BaseModel):
    id: str = Field(description="Value to send as `voice`")
    name: str
    library: bool = Field(description="true: a file in the voice library; false: an OpenAI name for the default voice")


class VoiceListResponse(BaseModel):
    """GET /v1/audio/voices: the shape Open WebUI and Kokoro-FastAPI clients read."""

    voices: list[VoiceEntry]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class SpeechUsage(BaseModel):
    input_tokens: int = Field(description="Characters of input (the variants' text tokenizers differ)")
    output_tokens: int = Field(description="Speech tokens generated (25 per second of audio)")
    total_tokens: int


class SpeechAudioDelta(BaseModel):
    type: Literal["speech.audio.delta"] = "speech.audio.delta"
    audio: str = Field(description="base64 bytes continuing one stream of response_format")


class SpeechAudioDone(BaseModel):
    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: SpeechUsage
    segments: list[SegmentSpan] | None = Field(
        None, description="SSML input only: where each segment lies in the audio (the seed's done message's list)"
    )


class SpeechStreamError(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorInfo
