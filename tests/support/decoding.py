"""Independent decoders for the adapter's output formats, and how close a decoded duration must be.

libsndfile (soundfile) decodes mp3 (mpg123), Ogg Opus (libopus), FLAC (libFLAC) and WAV: none of it
is the FFmpeg code (PyAV) that encodes them. libsndfile has no AAC; AAC is decoded by FFmpeg's own
AAC decoder through PyAV, the one decoder at hand for it (a different code path from the encoder,
but the same library)."""

from __future__ import annotations

import io

import av
import numpy as np
import soundfile as sf

# Samples per codec frame (at 24 kHz for mp3: MPEG-2 layer III frames hold 576 samples).
FRAME_SAMPLES = {"mp3": 576, "opus": 480, "aac": 1024, "flac": 4608, "wav": 1, "pcm": 1, "pcm_s16le": 1}
# Leading samples a decoder cannot drop without gapless metadata: a streamed mp3 has no LAME/Xing
# frame (its totals are known only at the end), and ADTS has no field for AAC's priming at all.
# mp3: LAME's start delay as mpg123 decodes a stream without that frame (1,312 samples at 24 kHz,
# the same for every length tried); aac: the encoder's 1,024 priming samples.
PRIMING_SAMPLES = {"mp3": 1312, "aac": 1024}


def frame_samples(fmt: str, rate: int) -> int:
    if fmt == "mp3" and rate > 24000:
        return 1152  # MPEG-1 frames
    return FRAME_SAMPLES[fmt]


def decode(data: bytes, fmt: str, rate: int = 24000) -> tuple[np.ndarray, int]:
    """(mono float samples, sample rate) of a complete or partial stream."""
    if fmt in ("pcm", "pcm_s16le"):
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0, rate
    if fmt == "aac":
        with av.open(io.BytesIO(data), mode="r", format="aac") as container:
            frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
            decoded_rate = container.streams.audio[0].rate
        return (np.concatenate(frames) if frames else np.zeros(0, np.float32)), decoded_rate
    with sf.SoundFile(io.BytesIO(data)) as f:
        blocks = list(f.blocks(blocksize=4096, dtype="float32", always_2d=True))
        decoded_rate = f.samplerate
    samples = np.concatenate(blocks)[:, 0] if blocks else np.zeros(0, np.float32)
    return samples, decoded_rate


def assert_duration(decoded: int, rate: int, expected_seconds: float, fmt: str, streamed: bool) -> float:
    """Decoded length within one codec frame of what was generated (plus the priming a streamed mp3
    or any ADTS stream cannot signal). Returns the difference in seconds."""
    expected = expected_seconds * rate
    tolerance = frame_samples(fmt, rate)
    if fmt == "aac" or (fmt == "mp3" and streamed):
        tolerance += PRIMING_SAMPLES[fmt]
    assert abs(decoded - expected) <= tolerance, (
        f"{fmt}: decoded {decoded} samples, generated {expected:.0f} (tolerance {tolerance})"
    )
    return (decoded - expected) / rate


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    window = samples[: min(len(samples), 16384)]
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    return float(np.argmax(spectrum) * rate / len(window))
