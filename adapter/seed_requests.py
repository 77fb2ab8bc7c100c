"""The seed API's wire models (POST /api/tts, WebSocket `say`) as a SynthesisRequest, and the
per-segment timings as the seed's answers carry them."""

from __future__ import annotations

import json
from collections.abc import Sequence

from adapter.joining import SegmentTiming
from adapter.request import Output, Segment, SynthesisRequest
from adapter.schemas import SayMessage, SegmentSpan, TTSRequest

# A whole (unstreamed) HTTP answer to a script: where each segment lies in the audio, as JSON.
SEGMENTS_HEADER = "X-Segments"


def seed_request(
    body: TTSRequest | SayMessage, transport: str, connection_voice: str | None = None
) -> SynthesisRequest:
    audio = body.audio
    segment = Segment(
        text=body.text,
        model=body.model,
        language_id=body.language_id,
        voice=body.voice.audio_prompt_path,
        parameters=body.voice.sampling_parameters(),
    )
    return SynthesisRequest(
        segments=(segment,),
        output=Output(audio.format, audio.sample_rate, audio.stream, audio.chunk_size_ms),
        transport=transport,
        connection_voice=connection_voice,
    )


def segment_spans(timings: Sequence[SegmentTiming] | None) -> list[SegmentSpan] | None:
    """The timings as every answer carries them (to the millisecond); None for a plain text."""
    if timings is None:
        return None
    return [
        SegmentSpan(index=t.index, start_seconds=round(t.start_seconds, 3), end_seconds=round(t.end_seconds, 3))
        for t in timings
    ]


def segments_header(timings: Sequence[SegmentTiming]) -> str:
    return json.dumps([span.model_dump() for span in segment_spans(timings) or []], separators=(",", ":"))
