"""The seed API's wire models (POST /api/tts, WebSocket `say`) as a SynthesisRequest, and the
per-segment timings as the seed's answers carry them."""

from __future__ import annotations

import json
from collections.abc import Sequence

from adapter.joining import SegmentTiming
from adapter.request import Output, Segment, SynthesisRequest
from adapter.schemas import SayMessage, ScriptSegment, SegmentSpan, TTSRequest
from adapter.ssml import is_ssml, ssml_segments

# A whole (unstreamed) HTTP answer to a script: where each segment lies in the audio, as JSON.
SEGMENTS_HEADER = "X-Segments"


def seed_request(
    body: TTSRequest | SayMessage, transport: str, connection_voice: str | None = None
) -> SynthesisRequest:
    audio = body.audio
    output = Output(audio.format, audio.sample_rate, audio.stream, audio.chunk_size_ms)
    scripted = True
    if body.segments is not None:
        segments = tuple(script_segment(body, entry) for entry in body.segments)
    else:
        assert body.text is not None  # the model requires text or segments
        base = Segment(
            text=body.text,
            model=body.model,
            language_id=body.language_id,
            voice=body.voice.audio_prompt_path,
            parameters=body.voice.sampling_parameters(),
            pause_ms=body.pause_ms,
        )
        # The seed's routes have no speed control: <prosody rate> is read past (docs/adapter-api.md).
        segments, _rate = ssml_segments(body.text, base) if is_ssml(body.text) else ((base,), None)
        scripted = len(segments) > 1 or is_ssml(body.text)
    return SynthesisRequest(
        segments=segments, output=output, transport=transport, connection_voice=connection_voice, scripted=scripted
    )


def script_segment(body: TTSRequest | SayMessage, entry: ScriptSegment) -> Segment:
    """One entry of `segments`, its unset fields taken from the request: the voice object field by field
    (a segment that names only another voice file keeps the request's sampling parameters)."""
    voice = body.voice.model_dump(exclude_unset=True)
    if entry.voice is not None:
        voice.update(entry.voice.model_dump(exclude_unset=True))
    voice_path = voice.pop("audio_prompt_path", None)
    return Segment(
        text=entry.text,
        model=entry.model or body.model,
        language_id=entry.language_id if "language_id" in entry.model_fields_set else body.language_id,
        voice=voice_path,
        parameters={name: value for name, value in voice.items() if value is not None},
        pause_ms=body.pause_ms if entry.pause_ms is None else entry.pause_ms,
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
