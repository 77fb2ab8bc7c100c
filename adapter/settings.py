"""Adapter configuration, read once from the environment at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from adapter.discovery import validate_names

MIB = 1024 * 1024

# The seed's RUST_LOG names are kept; "warn" and "trace" have no direct stdlib spelling.
_LOG_LEVELS = {
    "error": "error",
    "warn": "warning",
    "warning": "warning",
    "info": "info",
    "debug": "debug",
    "trace": "trace",
    "critical": "critical",
}


class SettingsError(ValueError):
    """An environment variable that cannot be used; the message names it."""


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8081
    predictor_url: str = "http://localhost:8080"
    # Discovery (adapter/discovery.py): with INFERENCESERVICE_NAME set, the predictor's address and
    # readiness come from that InferenceService's status; from_env drops it when PREDICTOR_URL is set.
    inferenceservice_name: str | None = None
    pod_namespace: str | None = None  # unset: the ServiceAccount's namespace file
    predictor_timeout_s: float = 300.0
    voices_dir: str = "./voices"
    default_voice: str | None = None
    api_token: str | None = None
    max_concurrent_requests: int = 3
    max_text_length: int = 5000
    max_upload_bytes: int = 20 * MIB
    voice_min_seconds: float = 2.0
    voice_max_seconds: float = 60.0
    log_level: str = "info"
    wyoming_port: int = 10200  # Wyoming (Home Assistant) TTS server on HOST; 0 turns it off
    openai_model_map: str | None = None  # JSON, laid over adapter/openai/serving.py's DEFAULT_MODEL_MAP

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _convert(f.name.upper(), raw.strip(), f.default)
        if "predictor_url" in values:  # an explicit PREDICTOR_URL wins: no discovery
            values.pop("inferenceservice_name", None)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        checks = [
            (1 <= self.port <= 65535, "PORT must be between 1 and 65535"),
            (
                self.predictor_url.startswith(("http://", "https://")),
                "PREDICTOR_URL must start with http:// or https://",
            ),
            (self.predictor_timeout_s > 0, "PREDICTOR_TIMEOUT_S must be positive"),
            (self.max_concurrent_requests >= 1, "MAX_CONCURRENT_REQUESTS must be at least 1"),
            (self.max_text_length >= 1, "MAX_TEXT_LENGTH must be at least 1"),
            (self.max_upload_bytes >= 1024, "MAX_UPLOAD_BYTES must be at least 1024"),
            (
                0 <= self.voice_min_seconds < self.voice_max_seconds,
                "VOICE_MIN_SECONDS must be >= 0 and below VOICE_MAX_SECONDS",
            ),
            (0 <= self.wyoming_port <= 65535, "WYOMING_PORT must be between 0 (off) and 65535"),
            (self.log_level.lower() in _LOG_LEVELS, f"LOG_LEVEL must be one of {', '.join(sorted(_LOG_LEVELS))}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)
        problems = validate_names(self.inferenceservice_name, self.pod_namespace)
        if problems:
            raise SettingsError(problems[0])

    @property
    def discovers_predictor(self) -> bool:
        return bool(self.inferenceservice_name)

    @property
    def uvicorn_log_level(self) -> str:
        return _LOG_LEVELS[self.log_level.lower()]


def _convert(name: str, raw: str, default: object) -> object:
    try:
        if isinstance(default, bool):
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {type(default).__name__}") from None
    return raw
