"""The Chatterbox variants and the audio facts both services rely on."""

from __future__ import annotations

from typing import Literal

VariantName = Literal["standard", "turbo", "multilingual"]
VARIANT_NAMES: tuple[VariantName, ...] = ("standard", "turbo", "multilingual")

# The multilingual model's language codes (upstream's SUPPORTED_LANGUAGES); the others speak English only.
LANGUAGES = (
    "ar",
    "da",
    "de",
    "el",
    "en",
    "es",
    "fi",
    "fr",
    "he",
    "hi",
    "it",
    "ja",
    "ko",
    "ms",
    "nl",
    "no",
    "pl",
    "pt",
    "ru",
    "sv",
    "sw",
    "tr",
    "zh",
)
ENGLISH_ONLY_LANGUAGE = "en"

SAMPLE_RATE = 24000  # S3Gen's output rate, for every variant
SPEECH_TOKENS_PER_SECOND = 25
SAMPLES_PER_TOKEN = SAMPLE_RATE // SPEECH_TOKENS_PER_SECOND  # 960

# Turbo's prepare_conditionals asserts a reference longer than 5 s; the others take shorter ones.
MIN_REFERENCE_SECONDS: dict[str, float] = {"standard": 0.0, "turbo": 5.0, "multilingual": 0.0}
TURBO_MIN_REFERENCE_SECONDS = MIN_REFERENCE_SECONDS["turbo"]
