"""Joining a script's segments (adapter/joining.py): loudness matched by active RMS, 5 ms fades at every
join, the pause after each segment, and the timings, fed in uneven chunks as a stream arrives."""

from __future__ import annotations

import numpy as np
import pytest

from adapter.joining import MAX_GAIN, SegmentJoiner, active_power
from contract.variants import SAMPLE_RATE


def tone(seconds: float, amplitude: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def join(segments: list[np.ndarray], pauses: list[int], shape: bool = True, piece: int = 1234):
    joiner = SegmentJoiner(shape=shape)
    out = []
    for index, (audio, pause) in enumerate(zip(segments, pauses)):
        joiner.begin(index)
        for start in range(0, audio.size, piece):
            out.append(joiner.feed(audio[start : start + piece]))
        out.append(joiner.end(pause, last=index == len(segments) - 1))
    return np.concatenate(out), joiner.timings


def rms(samples: np.ndarray) -> float:
    energy, count = active_power(samples)
    return float(np.sqrt(energy / count))


def test_one_segment_passes_through_untouched():
    audio = tone(0.5, 0.3)
    out, timings = join([audio], [300], shape=False)
    assert np.array_equal(out, audio)  # no fade, no gain, no trailing pause
    assert [(t.index, t.start_seconds, t.end_seconds) for t in timings] == [(0, 0.0, 0.5)]


def test_a_quieter_voice_is_brought_to_the_first_ones_level():
    out, timings = join([tone(1.0, 0.4), tone(1.0, 0.1, 330.0)], [250, 0])
    first = out[: int(timings[0].end_seconds * SAMPLE_RATE)]
    second = out[int(timings[1].start_seconds * SAMPLE_RATE) :]
    assert 20 * np.log10(rms(second) / rms(first)) == pytest.approx(0.0, abs=0.2)


def test_the_gain_is_bounded_so_a_near_silent_segment_is_not_blown_up():
    out, timings = join([tone(1.0, 0.5), tone(1.0, 0.02)], [0, 0])
    second = out[int(timings[1].start_seconds * SAMPLE_RATE) :]
    assert rms(second) == pytest.approx(rms(tone(1.0, 0.02)) * MAX_GAIN, rel=0.02)


def test_pauses_and_timings():
    out, timings = join([tone(0.5, 0.3), tone(0.75, 0.3), tone(0.25, 0.3)], [400, 100, 900])
    assert [(t.start_seconds, t.end_seconds) for t in timings] == [(0.0, 0.5), (0.9, 1.65), (1.75, 2.0)]
    assert out.size == 2 * SAMPLE_RATE  # no pause after the last segment
    assert not out[int(0.5 * SAMPLE_RATE) : int(0.9 * SAMPLE_RATE)].any()  # the pause is silence


def test_joins_are_click_free():
    # Segments that start and end at full swing (a sine cut at its peak) against silence.
    loud = np.full(SAMPLE_RATE // 2, 0.5, dtype=np.float32)
    out, timings = join([loud, loud.copy()], [200, 0], piece=997)
    for t in timings:
        start, end = round(t.start_seconds * SAMPLE_RATE), round(t.end_seconds * SAMPLE_RATE)
        assert abs(out[start]) < 0.01 and abs(out[end - 1]) < 0.01  # faded in and out
    # No step anywhere larger than the fade's steepest slope (0.5 * pi / 2 / 120 samples).
    assert np.max(np.abs(np.diff(out))) < 0.5 * np.pi / 2 / 120 * 1.05
