"""Output encoding for every surface (POST /api/tts, WebSocket say, /v1/audio/speech): one incremental
encoder per request, float32 model audio in, bytes of the requested format out.

Compressed formats are encoded by FFmpeg through PyAV (its wheels carry the codecs: LAME for mp3,
libopus, FFmpeg's native AAC and FLAC encoders); no ffmpeg binary is needed on the host.

Streaming output is one valid stream cut wherever the encoder has produced bytes: mp3 frames, Ogg
pages (Opus), ADTS frames (AAC), or 16-bit PCM after the customary unknown-length WAV header. A player
can decode every prefix. FLAC is a file format whose header holds the length and checksum, known only
at the end (libsndfile refuses FLAC whose header leaves them unknown), so FLAC always comes whole,
once generated; so does every format of a request that does not stream, with exact headers
(mp3 with its LAME/Xing frame, so decoders trim the encoder delay and padding).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import cast

import av
import av.filter
import numpy as np
from av.audio.stream import AudioStream

from adapter.audio import StreamResampler, to_pcm16, wav_header
from adapter.errors import APIError
from contract.variants import SAMPLE_RATE

MIN_SPEED, MAX_SPEED = 0.25, 4.0


@dataclass(frozen=True)
class OutputFormat:
    media_type: str
    container: str | None = None  # None: 16-bit PCM, with or without a WAV header
    codec: str | None = None
    sample_rates: tuple[int, ...] | None = None  # None: any rate the API accepts
    bit_rate: int | None = None
    streams: bool = True  # False: sent whole once generated (the header needs the totals)
    muxer_options: tuple[tuple[str, str], ...] = ()

    def check_sample_rate(self, name: str, rate: int) -> None:
        if self.sample_rates is not None and rate not in self.sample_rates:
            allowed = ", ".join(str(r) for r in self.sample_rates)
            raise APIError(400, f"sample_rate {rate} is not available for {name} (allowed: {allowed})")


_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# Keys are the canonical format names of the seed API; "pcm" is the OpenAI spelling of pcm_s16le.
FORMATS: dict[str, OutputFormat] = {
    "wav": OutputFormat("audio/wav"),
    "pcm_s16le": OutputFormat("application/octet-stream"),
    "mp3": OutputFormat("audio/mpeg", "mp3", "libmp3lame", _MP3_RATES, 64_000),
    # One Opus packet (20 ms) per Ogg page: the muxer's default one-second pages would hold
    # generated audio back from a streaming client.
    "opus": OutputFormat(
        "audio/ogg", "ogg", "libopus", (8000, 12000, 16000, 24000, 48000), 48_000, True, (("page_duration", "20000"),)
    ),
    "aac": OutputFormat("audio/aac", "adts", "aac", _MP3_RATES, 64_000),
    "flac": OutputFormat("audio/flac", "flac", "flac", None, None, streams=False),
}


def output_format(name: str) -> OutputFormat:
    return FORMATS[name]


def check_output(name: str, sample_rate: int) -> OutputFormat:
    """The format, or a 400 that names what the codec allows; call before admitting a request."""
    fmt = FORMATS[name]
    fmt.check_sample_rate(name, sample_rate)
    return fmt


def check_speed(speed: float) -> None:
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise APIError(400, f"speed {speed:g} is outside {MIN_SPEED:g}-{MAX_SPEED:g}")


class TimeStretch:
    """Tempo change that keeps pitch: FFmpeg's atempo (WSOLA) filter, fed incrementally so that a
    stream is stretched as it is generated. One atempo instance covers 0.5-2.0; wider factors chain."""

    def __init__(self, speed: float, sample_rate: int):
        check_speed(speed)
        factors = []
        while speed > 2.0:
            factors.append(2.0)
            speed /= 2.0
        while speed < 0.5:
            factors.append(0.5)
            speed /= 0.5
        factors.append(speed)
        self._rate = sample_rate
        self._pts = 0
        self._graph = av.filter.Graph()
        nodes = [self._graph.add_abuffer(format="flt", sample_rate=sample_rate, layout="mono")]
        nodes += [self._graph.add("atempo", f"{factor:.6f}") for factor in factors]
        nodes.append(self._graph.add("abuffersink"))
        self._graph.link_nodes(*nodes).configure()

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if samples.size:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = self._pts
            self._pts += samples.size
            self._graph.push(frame)
        if last:
            self._graph.push(None)
        out = []
        while True:
            try:
                out.append(self._graph.pull().to_ndarray().reshape(-1))
            except (av.BlockingIOError, av.EOFError):
                break
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, dtype=np.float32)


class _Sink:
    """A write-only file for PyAV: without seek(), muxers never go back to patch bytes already sent."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class _Codec:
    """One PyAV output container with one mono audio stream."""

    def __init__(self, fmt: OutputFormat, sample_rate: int, streaming: bool):
        self._file: _Sink | io.BytesIO = _Sink() if streaming else io.BytesIO()
        self._container = av.open(self._file, mode="w", format=fmt.container, options=dict(fmt.muxer_options))
        if fmt.codec is None:
            raise ValueError(f"{fmt.container} output needs a codec")
        # An audio codec name: PyAV's overloads only narrow the stream type for literal names.
        self._stream = cast(AudioStream, self._container.add_stream(fmt.codec, rate=sample_rate, layout="mono"))
        if fmt.bit_rate:
            self._stream.codec_context.bit_rate = fmt.bit_rate
        if fmt.codec == "flac":
            self._stream.codec_context.format = "s16"  # 16-bit like every other output
        self._rate = sample_rate
        self._pts = 0

    def encode(self, samples: np.ndarray, last: bool) -> bytes:
        if samples.size:
            clipped = np.clip(samples, -1.0, 1.0).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(clipped, format="flt", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = self._pts
            self._pts += samples.size
            self._container.mux(self._stream.encode(frame))
        if last:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            if isinstance(self._file, io.BytesIO):
                return self._file.getvalue()
        return self._file.take() if isinstance(self._file, _Sink) else b""


class Encoder:
    """Float32 model audio in, the requested format at the requested rate (and speed) out.

    `encode(samples, last)` returns the bytes ready so far (maybe none); `last=True` ends the stream.
    With `streaming=False`, or for formats that cannot stream (FLAC), everything comes with `last`.
    For streamed WAV, callers put `stream_header()` before the first bytes; `rechunkable` says that
    the output is plain PCM that may be cut anywhere on a sample boundary (otherwise send pieces as
    they come: each is a run of whole frames or pages).
    """

    def __init__(
        self,
        fmt: str,
        sample_rate: int,
        in_rate: int = SAMPLE_RATE,
        *,
        streaming: bool = True,
        speed: float = 1.0,
    ):
        spec = check_output(fmt, sample_rate)
        self.format = fmt
        self.sample_rate = sample_rate
        self.media_type = spec.media_type
        self.streaming = streaming and spec.streams
        self.samples_out = 0
        self._resampler = StreamResampler(in_rate, sample_rate)
        self._stretch = TimeStretch(speed, sample_rate) if speed != 1.0 else None
        self._codec = _Codec(spec, sample_rate, self.streaming) if spec.container else None
        self._pcm: list[bytes] = []  # whole WAV/PCM output, waiting for `last`

    @property
    def rechunkable(self) -> bool:
        return self._codec is None and self.streaming

    def encode(self, samples: np.ndarray, last: bool = False) -> bytes:
        out = self._resampler.process(samples, last=last)
        if self._stretch is not None:
            out = self._stretch.process(out, last=last)
        self.samples_out += out.size
        if self._codec is not None:
            return self._codec.encode(out, last)
        pcm = to_pcm16(out)
        if self.streaming:
            return pcm
        self._pcm.append(pcm)
        if not last:
            return b""
        data = b"".join(self._pcm)
        return wav_header(self.sample_rate, len(data)) + data if self.format == "wav" else data

    def stream_header(self) -> bytes:
        return wav_header(self.sample_rate, None) if self.format == "wav" and self.streaming else b""

    @property
    def duration_seconds(self) -> float:
        return self.samples_out / self.sample_rate


def encode_whole(
    samples: np.ndarray, fmt: str, sample_rate: int, in_rate: int = SAMPLE_RATE, speed: float = 1.0
) -> bytes:
    """A complete file with exact headers from all the audio at once."""
    return Encoder(fmt, sample_rate, in_rate, streaming=False, speed=speed).encode(samples, last=True)
