"""Adapter configuration, read once from the environment at start-up (contract.settings: the idiom
and the variables both services share)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, field_validator, model_validator

from adapter.discovery import validate_names
from contract.settings import SettingsError, SharedSettings, load_settings

__all__ = ["Settings", "SettingsError"]

MIB = 1024 * 1024


class Settings(SharedSettings):
    host: str = "0.0.0.0"
    port: int = Field(8081, ge=1, le=65535)
    predictor_url: str = "http://localhost:8080"
    # Discovery (adapter/discovery.py): with INFERENCESERVICE_NAME set, the predictor's address and
    # readiness come from that InferenceService's status; an explicit PREDICTOR_URL turns it off.
    inferenceservice_name: str | None = None
    pod_namespace: str | None = None  # unset: the ServiceAccount's namespace file
    predictor_timeout_s: float = Field(300.0, gt=0)
    # A started request's own waits (adapter/breaker.py refuses new ones while the predictor is not
    # answering): from the call to its first audio chunk, and between two chunks. A GPU predictor
    # sends its first chunk within a second or two and the next ones faster than real time; these
    # leave room for a new voice's preparation and a CPU predictor, and end a stream that a frozen
    # predictor (a GPU hang, SIGSTOP) leaves silent with a 504 that names the setting.
    first_chunk_timeout_s: float = Field(120.0, gt=0)
    chunk_gap_timeout_s: float = Field(60.0, gt=0)
    default_voice: str | None = None
    api_token: str | None = None
    max_upload_bytes: int = Field(20 * MIB, ge=1024)
    voice_min_seconds: float = Field(2.0, ge=0)
    voice_max_seconds: float = 60.0
    wyoming_port: int = Field(10200, ge=0, le=65535)  # Wyoming (Home Assistant) TTS server on HOST; 0 turns it off
    openai_model_map: str | None = None  # JSON, laid over adapter/openai/serving.py's DEFAULT_MODEL_MAP
    # Seconds a client may leave sent audio unread before it is dropped (its slot is then freed).
    client_send_timeout_s: float = Field(30.0, gt=0)

    @field_validator("predictor_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.voice_min_seconds >= self.voice_max_seconds:
            raise ValueError("VOICE_MIN_SECONDS must be below VOICE_MAX_SECONDS")
        problems = validate_names(self.inferenceservice_name, self.pod_namespace)
        if problems:
            raise ValueError(problems[0])
        if "predictor_url" in self.model_fields_set:  # an explicit PREDICTOR_URL wins: no discovery
            self.inferenceservice_name = None
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """From os.environ, or from `env` instead (tests); SettingsError names a bad variable."""
        return load_settings(cls, env)

    @property
    def discovers_predictor(self) -> bool:
        return bool(self.inferenceservice_name)
