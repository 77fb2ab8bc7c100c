"""Segments of a script joined into one stream, as they are generated: loudness matched, joins
without clicks, the pause after each segment, and where each segment lies in the result.

Loudness: RMS over the active (non-silent) 20 ms frames. The first segment sets the level; every
later segment gets one gain, fixed for the whole segment (no pumping inside it), chosen from its
first active audio so that its level matches the level of everything before it. EBU R128 would need
400 ms blocks gated over the whole programme: a stream cannot wait for that, and between voices of
one model the two measures agree closely enough. The gain is bounded to +-12 dB, so a whispered
segment stays quieter rather than having its noise floor blown up.

Joins: each segment fades in and out over 5 ms (a raised cosine), so a voice never starts or stops
on a non-zero sample against the silence between segments. To fade a segment's end as it streams,
the last 5 ms of what has arrived is held back until the next chunk (or the end) comes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.variants import SAMPLE_RATE

FADE_SECONDS = 0.005
FRAME_SECONDS = 0.020
# Frames below this RMS (-40 dBFS) are pauses and breaths: they do not count towards loudness.
ACTIVE_RMS = 10 ** (-40 / 20)
MAX_GAIN = 10 ** (12 / 20)


@dataclass(frozen=True)
class SegmentTiming:
    index: int
    start_seconds: float
    end_seconds: float


def active_power(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[float, int]:
    """(sum of squares, sample count) over the active frames of `samples`."""
    frame = max(1, int(sample_rate * FRAME_SECONDS))
    usable = samples.size - samples.size % frame
    if usable == 0:
        frames = samples.reshape(1, -1) if samples.size else np.zeros((0, 1), dtype=np.float32)
    else:
        frames = samples[:usable].reshape(-1, frame)
    if frames.size == 0:
        return 0.0, 0
    power = np.mean(np.square(frames, dtype=np.float64), axis=1)
    active = power > ACTIVE_RMS**2
    return float(np.sum(power[active]) * frames.shape[1]), int(np.count_nonzero(active) * frames.shape[1])


def _ramp(length: int) -> np.ndarray:
    """Raised-cosine gain from 0 towards 1 over `length` samples."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(length) + 0.5) / length)).astype(np.float32)


class SegmentJoiner:
    """Feed each segment's chunks between `begin` and `end`; every call returns the audio to send now.
    `shape=False` passes audio through untouched (a one-segment request sounds exactly as before)
    and only keeps the timings."""

    def __init__(self, shape: bool, sample_rate: int = SAMPLE_RATE):
        self.shape = shape
        self.sample_rate = sample_rate
        self.timings: list[SegmentTiming] = []
        self._fade = max(1, int(sample_rate * FADE_SECONDS))
        self._emitted = 0  # samples sent so far
        self._energy = 0.0  # sum of squares of the active audio sent so far (after gain)
        self._active = 0
        self._index = -1
        self._start = 0
        self._position = 0  # samples of the current segment seen so far
        self._gain: float | None = None
        self._tail = np.zeros(0, dtype=np.float32)

    def begin(self, index: int) -> None:
        self._index = index
        self._start = self._emitted
        self._position = 0
        self._gain = None
        self._tail = np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if not self.shape:
            return self._sent(samples)
        gain = self._gain_for(samples)
        out = samples * np.float32(gain)
        fade_left = self._fade - self._position
        if fade_left > 0 and out.size:  # this segment's first 5 ms: fade in
            n = min(fade_left, out.size)
            out[:n] *= _ramp(self._fade)[self._position : self._position + n]
        self._position += samples.size
        joined = np.concatenate([self._tail, out])
        keep = min(self._fade, joined.size)
        self._tail = joined[joined.size - keep :].copy()
        return self._sent(joined[: joined.size - keep])

    def end(self, pause_ms: int, last: bool) -> np.ndarray:
        """The segment's held end, faded out, and the pause after it (none after the last segment)."""
        tail = self._tail
        self._tail = np.zeros(0, dtype=np.float32)
        if tail.size:
            tail = tail * _ramp(tail.size)[::-1]
        out = self._sent(tail)
        self.timings.append(
            SegmentTiming(self._index, self._start / self.sample_rate, self._emitted / self.sample_rate)
        )
        if last or pause_ms <= 0:
            return out
        silence = np.zeros(round(self.sample_rate * pause_ms / 1000), dtype=np.float32)
        return np.concatenate([out, self._sent(silence)])

    def _gain_for(self, samples: np.ndarray) -> float:
        if self._gain is not None:
            return self._gain
        energy, count = active_power(samples, self.sample_rate)
        if count == 0:
            return 1.0  # silence so far: its level says nothing, and a gain on it changes nothing audible
        if self._active == 0:
            self._gain = 1.0  # the first voice heard sets the level
        else:
            target = np.sqrt(self._energy / self._active)
            level = np.sqrt(energy / count)
            self._gain = float(np.clip(target / level, 1 / MAX_GAIN, MAX_GAIN))
        return self._gain

    def _sent(self, samples: np.ndarray) -> np.ndarray:
        self._emitted += samples.size
        if self.shape:
            energy, count = active_power(samples, self.sample_rate)
            self._energy += energy
            self._active += count
        return samples
