"""Predictor settings, read once from the environment (names follow the seed's configuration table)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .engine.variants import VARIANT_NAMES


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"error: {name}={raw!r} is not a boolean (use true or false)")


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"error: {name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SystemExit(f"error: {name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class PredictorSettings:
    device: str = "auto"
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16, per component: predictor/engine/precision.py
    load_standard: bool = True
    load_turbo: bool = False
    load_multilingual: bool = False
    model_dir: str | None = None
    voices_dir: str = "./voices"
    max_concurrent_requests: int = 3
    max_text_length: int = 5000
    max_new_tokens: int = 1000
    voice_cache_size: int = 32
    log_level: str = "info"
    # The sentence-chunk schedule for streaming, in speech tokens: a small first chunk, larger later ones.
    stream_chunk_tokens: tuple[int, ...] = field(default=(6, 25, 50))

    @property
    def variants(self) -> list[str]:
        wanted = {"standard": self.load_standard, "turbo": self.load_turbo, "multilingual": self.load_multilingual}
        return [name for name in VARIANT_NAMES if wanted[name]]

    @classmethod
    def from_env(cls, model_dir: str | None = None) -> PredictorSettings:
        device = os.environ.get("DEVICE", "auto").strip().lower() or "auto"
        if device not in ("auto", "cpu", "cuda", "mps"):
            raise SystemExit(f"error: DEVICE={device!r} must be one of auto, cpu, cuda, mps")
        dtype = os.environ.get("DTYPE", "auto").strip().lower() or "auto"
        if dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise SystemExit(f"error: DTYPE={dtype!r} must be one of auto, float32, bfloat16, float16")
        schedule_raw = os.environ.get("STREAM_CHUNK_TOKENS", "6,25,50")
        try:
            schedule = tuple(int(x) for x in schedule_raw.split(",") if x.strip())
            if not schedule or min(schedule) < 1:
                raise ValueError
        except ValueError:
            raise SystemExit(
                f"error: STREAM_CHUNK_TOKENS={schedule_raw!r} must be positive integers, e.g. 6,25,50"
            ) from None
        settings = cls(
            device=device,
            dtype=dtype,
            load_standard=_env_bool("LOAD_STANDARD", True),
            load_turbo=_env_bool("LOAD_TURBO", False),
            load_multilingual=_env_bool("LOAD_MULTILINGUAL", False),
            model_dir=os.environ.get("MODEL_DIR") or model_dir,
            voices_dir=os.environ.get("VOICES_DIR", "./voices"),
            max_concurrent_requests=_env_int("MAX_CONCURRENT_REQUESTS", 3),
            max_text_length=_env_int("MAX_TEXT_LENGTH", 5000),
            max_new_tokens=_env_int("MAX_NEW_TOKENS", 1000),
            voice_cache_size=_env_int("VOICE_CACHE_SIZE", 32),
            log_level=os.environ.get("LOG_LEVEL", "info").lower(),
            stream_chunk_tokens=schedule,
        )
        if not settings.variants:
            raise SystemExit(
                "error: no model selected: set at least one of LOAD_STANDARD, LOAD_TURBO, LOAD_MULTILINGUAL to true"
            )
        return settings
