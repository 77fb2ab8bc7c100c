"""Request, response and WebSocket message models (the public contract, see docs/adapter-api.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ModelName = Literal["standard", "turbo", "multilingual"]
MAX_SEED = 2**31 - 1

# Documented ranges, quoted in validation messages so a client learns the whole range at once.
RANGES = {
    "exaggeration": "0.0-2.0",
    "cfg_weight": "0.0-1.0",
    "temperature": "0.1-1.5",
    "top_p": "0.0-1.0",
    "min_p": "0.0-1.0",
    "top_k": "1-10000",
    "repetition_penalty": "1.0-10.0",
    "seed": f"0-{MAX_SEED}",
    "max_new_tokens": ">= 1",
    "sample_rate": "8000-48000",
    "chunk_size_ms": "10-5000",
}

# Both spellings reach the same encoder; the canonical names are what responses report.
_FORMAT_ALIASES = {"wav": "wav", "pcm": "pcm_s16le", "pcm_s16le": "pcm_s16le"}


class _Strict(BaseModel):
    # Unknown fields are refused so that a misspelt parameter is not silently ignored.
    model_config = ConfigDict(extra="forbid")


class VoiceOptions(_Strict):
    """Voice and sampling parameters. Unset fields take the predictor's defaults for the model."""

    audio_prompt_path: str | None = Field(
        None,
        description="Voice file name in VOICES_DIR, or an absolute path inside it. "
        "Unset: the default voice, else the model's built-in voice.",
        max_length=1024,
    )
    exaggeration: float | None = Field(
        None, ge=0.0, le=2.0, description="Emotional intensity (default 0.5; standard/multilingual)"
    )
    cfg_weight: float | None = Field(
        None, ge=0.0, le=1.0, description="Pacing control (default 0.5; standard/multilingual)"
    )
    temperature: float | None = Field(None, ge=0.1, le=1.5, description="Sampling diversity (default 0.8)")
    top_p: float | None = Field(None, ge=0.0, le=1.0, description="Nucleus sampling threshold (model default)")
    repetition_penalty: float | None = Field(None, ge=1.0, le=10.0, description="Repetition penalty (model default)")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="Min-p sampling (default 0.05; not turbo)")
    top_k: int | None = Field(None, ge=1, le=10000, description="Top-k sampling (turbo only, default 1000)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Random seed for reproducible output")
    max_new_tokens: int | None = Field(None, ge=1, description="Upper bound on generated speech tokens")

    def sampling_parameters(self) -> dict:
        return self.model_dump(exclude_none=True, exclude={"audio_prompt_path"})


class _AudioBase(_Strict):
    sample_rate: int = Field(24000, ge=8000, le=48000, description="Output rate; resampled from the model's 24000 Hz")

    @field_validator("format", mode="before", check_fields=False)
    @classmethod
    def _canonical_format(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() in _FORMAT_ALIASES:
            return _FORMAT_ALIASES[value.lower()]
        return value


class HttpAudioOptions(_AudioBase):
    format: Literal["wav", "pcm_s16le"] = Field(
        "wav", description="wav, or raw little-endian 16-bit mono PCM (alias: pcm)"
    )
    stream: bool = Field(False, description="Send audio with chunked transfer as it is generated")
    chunk_size_ms: int | None = Field(None, ge=10, le=5000, description="Streaming only: re-chunk to this duration")


class WsAudioOptions(_AudioBase):
    format: Literal["wav", "pcm_s16le"] = Field("pcm_s16le", description="pcm_s16le (alias: pcm) or wav")
    stream: bool = Field(True, description="false: one chunk with all the audio once it is generated")
    chunk_size_ms: int = Field(40, ge=10, le=5000, description="Duration of each chunk message")


class _TextRequest(_Strict):
    text: str = Field(..., description="Text to speak (at most MAX_TEXT_LENGTH characters)")
    model: ModelName = Field("standard", description="Model variant; it must be loaded by the predictor")
    language_id: str | None = Field(None, min_length=2, max_length=16, description="Language code (multilingual model)")
    voice: VoiceOptions = Field(default_factory=VoiceOptions)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must not be empty")
        return value


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


class DoneMessage(BaseModel):
    type: Literal["done"] = "done"
    id: RequestId
    duration_seconds: float


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
    turbo_ok: bool = Field(description="Long enough (> 5 s) to be a turbo reference voice")


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
