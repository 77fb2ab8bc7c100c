"""Prometheus metrics of the predictor, served by kserve's own /metrics route (the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("chatterbox_requests_total", "Synthesis requests by model and outcome", ["model", "outcome"])
AUDIO_SECONDS = Counter("chatterbox_audio_seconds_total", "Seconds of audio generated", ["model"])
SPEECH_TOKENS = Counter("chatterbox_speech_tokens_total", "Speech tokens generated", ["model"])
VOICE_CACHE = Counter("chatterbox_voice_cache_total", "Voice conditionals cache lookups", ["model", "result"])
IN_FLIGHT = Gauge("chatterbox_requests_in_flight", "Synthesis requests being served", ["model"])
TIME_TO_FIRST_AUDIO = Histogram(
    "chatterbox_time_to_first_audio_seconds",
    "From request arrival to the first audio chunk",
    ["model"],
    buckets=(0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60),
)
INTER_CHUNK_GAP = Histogram(
    "chatterbox_inter_chunk_gap_seconds",
    "Time between consecutive streamed audio chunks",
    ["model"],
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10),
)
REAL_TIME_FACTOR = Histogram(
    "chatterbox_real_time_factor",
    "Wall time divided by seconds of audio produced",
    ["model"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 50),
)


def record_voice_cache(model: str, hit: bool) -> None:
    VOICE_CACHE.labels(model=model, result="hit" if hit else "miss").inc()
