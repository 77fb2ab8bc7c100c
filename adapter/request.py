"""What the adapter synthesises, whatever protocol asked for it.

Each transport (seed HTTP and WebSocket, OpenAI's /v1, Wyoming) turns its own wire model into a
`SynthesisRequest`; `adapter.synthesis.Synthesis` runs it. No transport builds another's wire model.
A request is one or more segments, spoken in order into one stream: a plain `text` is one segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Segment:
    """One piece of text in one voice. `voice` is the voice as the client named it (resolved at
    admission); None: the connection's voice, else the default, else the model's built-in voice."""

    text: str
    model: str
    language_id: str | None = None
    voice: str | None = None
    # The sampling parameters the client set; the predictor applies each model's defaults to the rest.
    parameters: Mapping[str, Any] = field(default_factory=dict)
    pause_ms: int = 0  # silence after this segment (none after the last)
    # `voice` is a name (SSML's <voice name>) whose extension may be left out, not a file name.
    voice_named: bool = False


@dataclass(frozen=True)
class Output:
    """How the audio leaves: the codec's format and rate, streamed or whole, and the transport's framing.
    `chunk_size_ms`: cut plain PCM into pieces of this duration (None: send as encoded)."""

    format: str
    sample_rate: int
    stream: bool
    chunk_size_ms: int | None = None
    speed: float = 1.0  # tempo change, pitch kept (OpenAI's `speed`, SSML's <prosody rate>)


@dataclass(frozen=True)
class SynthesisRequest:
    segments: tuple[Segment, ...]
    output: Output
    transport: str  # the `transport` label of the adapter's metrics: http, ws, openai, wyoming
    connection_voice: str | None = None  # WebSocket set_voice: the voice of segments that name none
    # Whether the client sent segments (or SSML): only then do answers carry per-segment timings.
    scripted: bool = False

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a synthesis request needs at least one segment")

    @property
    def model(self) -> str:
        """The model of the metrics' `model` label: the first segment's."""
        return self.segments[0].model

    @property
    def text_length(self) -> int:
        return sum(len(segment.text) for segment in self.segments)
