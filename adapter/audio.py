"""Output audio primitives: resampling, 16-bit PCM / WAV headers and fixed-duration re-chunking
(the per-request encoder for every format is adapter/codecs.py)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np
import soxr

# A streamed WAV cannot know its length up front; 0xFFFFFFFF is the customary "unknown" size that
# players and decoders (ffmpeg, browsers, libsndfile) read as "until the end of the stream".
STREAMING_WAV_SIZE = 0xFFFFFFFF
WAV_HEADER_BYTES = 44


def wav_header(sample_rate: int, data_bytes: int | None, channels: int = 1) -> bytes:
    """44-byte PCM WAV header; data_bytes=None gives the streaming (unknown length) header."""
    if data_bytes is None:
        riff_size = data_size = STREAMING_WAV_SIZE
    else:
        data_size = data_bytes
        riff_size = min(36 + data_bytes, STREAMING_WAV_SIZE)
    block_align = channels * 2
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16)
        + b"data"
        + struct.pack("<I", data_size)
    )


def to_pcm16(samples: np.ndarray) -> bytes:
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


class StreamResampler:
    """Stateful resampler, so chunk boundaries do not click; a pass-through at the model rate."""

    def __init__(self, in_rate: int, out_rate: int):
        self._stream = (
            None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
        )

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)


class Rechunker:
    """Cuts a byte stream into pieces of exactly `chunk_bytes` (the last may be shorter)."""

    def __init__(self, chunk_bytes: int):
        self._size = max(2, chunk_bytes - chunk_bytes % 2)
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Every complete piece, at once: holding one back would delay first audio by a whole engine chunk."""
        self._buffer += data
        while len(self._buffer) >= self._size:
            piece = bytes(self._buffer[: self._size])
            del self._buffer[: self._size]
            yield piece

    def finish(self) -> Iterator[bytes]:
        """The shorter remainder, if any."""
        if self._buffer:
            yield bytes(self._buffer)
            self._buffer.clear()


def chunk_bytes_for(sample_rate: int, chunk_size_ms: int) -> int:
    return max(1, round(sample_rate * chunk_size_ms / 1000)) * 2
