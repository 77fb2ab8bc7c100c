"""The predictor<->adapter streaming protocol: POST /v2/models/{name}/generate_stream.

The request is JSON; the answer is Server-Sent Events, each `data: <one JSON event>\\n\\n`:
chunk events (audio as base64 float32 little-endian mono at SAMPLE_RATE), then one done event, or an
error event when generation fails after the stream began (earlier failures are plain HTTP errors).
The predictor's route, the adapter's client, the adapter's test double and the benchmark all use
these models, `encode_event` and `EventReader`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from .variants import SAMPLE_RATE

STREAM_PATH = "/v2/models/{model}/generate_stream"
MEDIA_TYPE = "text/event-stream"


class StreamProtocolError(ValueError):
    """An event that does not follow this protocol."""


class GenerateStreamRequest(BaseModel):
    text_input: str = Field(description="The text to speak (UTF-8)")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Same names as the V2 infer parameters (contract/params.py), plus `voice`"
    )
    audio_prompt_b64: str | None = Field(default=None, description="Base64 bytes of a reference audio file")
    incremental: bool = Field(
        default=True,
        description=(
            "true: chunks as speech tokens arrive; false: one chunk per text piece, each exactly what "
            "infer (and upstream generate()) makes, at a lower total cost"
        ),
    )


class ChunkEvent(BaseModel):
    type: Literal["chunk"] = "chunk"
    index: int
    sample_rate: int = SAMPLE_RATE
    final: bool = Field(False, description="The utterance's last chunk: a relay can flag its own last piece at once")
    audio_b64: str = Field(description="base64 of float32 little-endian mono samples")

    @classmethod
    def from_samples(cls, index: int, samples: np.ndarray, final: bool) -> ChunkEvent:
        data = np.asarray(samples, dtype="<f4").tobytes()
        return cls(index=index, final=final, audio_b64=base64.b64encode(data).decode("ascii"))

    def samples(self) -> np.ndarray:
        """The audio as float32; StreamProtocolError when it is not base64 of whole float32 samples
        or not at SAMPLE_RATE."""
        if self.sample_rate != SAMPLE_RATE:
            raise StreamProtocolError(f"audio at {self.sample_rate} Hz, expected {SAMPLE_RATE}")
        try:
            raw = base64.b64decode(self.audio_b64, validate=True)
            return np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=False)
        except (binascii.Error, ValueError):
            raise StreamProtocolError("an audio chunk is not base64 of float32 samples") from None


class DoneEvent(BaseModel):
    type: Literal["done"] = "done"
    chunks: int
    duration_seconds: float
    speech_tokens: int
    seed: int | None = None


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    code: int = Field(description="HTTP status that describes the failure (400 for bad input, 500 otherwise)")
    message: str


StreamEvent = Annotated[ChunkEvent | DoneEvent | ErrorEvent, Field(discriminator="type")]
_EVENT = TypeAdapter(StreamEvent)


def encode_event(event: ChunkEvent | DoneEvent | ErrorEvent) -> bytes:
    return b"data: " + event.model_dump_json().encode() + b"\n\n"


def parse_event(data: str | bytes) -> ChunkEvent | DoneEvent | ErrorEvent:
    """One event's JSON; StreamProtocolError when it is not one of the three events."""
    try:
        return _EVENT.validate_json(data)
    except ValidationError as exc:
        raise StreamProtocolError(f"malformed stream event ({exc.errors()[0]['msg']})") from None


class EventReader:
    """Assembles SSE lines into events: feed every line (without its line ending) in order;
    an event comes back at the blank line that ends it. Comments and other fields are skipped."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> ChunkEvent | DoneEvent | ErrorEvent | None:
        if line.startswith("data:"):
            self._data.append(line[5:].removeprefix(" "))
        elif line == "" and self._data:
            raw, self._data = "\n".join(self._data), []
            return parse_event(raw)
        return None
