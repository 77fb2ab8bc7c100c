"""adapter/codecs.py: every output format, streamed and whole, decoded by an independent decoder
(tests/support/decoding.py), with the generated duration; streams that decode as they arrive;
sample rates each codec takes; tempo changes that keep pitch."""

from __future__ import annotations

import numpy as np
import pytest

from adapter.codecs import FORMATS, Encoder, TimeStretch, check_output
from adapter.errors import APIError
from tests.support.decoding import assert_duration, decode, dominant_frequency

RATE = 24000
TONE_HZ = 440.0
# Uneven pieces, like the predictor's chunks: no codec frame size divides them.
PIECES = (3000, 7001, 11111, 5000, 6777)


def tone(samples: int, rate: int = RATE) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(samples) / rate)).astype(np.float32)


def encode_in_pieces(encoder: Encoder, audio: np.ndarray) -> list[bytes]:
    outputs, start = [], 0
    for i, size in enumerate(PIECES):
        piece = audio[start : start + size]
        start += size
        outputs.append(encoder.encode(piece, last=i == len(PIECES) - 1))
    return outputs


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_decodes_to_the_generated_duration(fmt, streaming):
    audio = tone(sum(PIECES))
    encoder = Encoder(fmt, RATE, streaming=streaming)
    data = encoder.stream_header() + b"".join(encode_in_pieces(encoder, audio))
    samples, rate = decode(data, fmt, RATE)
    assert rate == RATE
    assert encoder.duration_seconds == pytest.approx(len(audio) / RATE)
    assert_duration(len(samples), rate, len(audio) / RATE, fmt, streamed=encoder.streaming)
    assert abs(dominant_frequency(samples[2048:], rate) - TONE_HZ) < 5  # the audio itself, not just its length


@pytest.mark.parametrize("fmt", ["mp3", "wav", "flac"])
def test_whole_files_have_exact_lengths(fmt):
    """Not streamed, the headers carry the totals: mp3's LAME/Xing frame lets decoders drop the
    encoder delay and padding, so even mp3 decodes to the sample."""
    audio = tone(sum(PIECES))
    encoder = Encoder(fmt, RATE, streaming=False)
    samples, _ = decode(b"".join(encode_in_pieces(encoder, audio)), fmt)
    assert len(samples) == len(audio)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac"])
def test_streams_decode_as_they_arrive(fmt):
    """Each piece continues one valid stream: every prefix a client has received decodes, and the
    audio grows with every piece (mp3 frames, Ogg pages, ADTS frames are never cut)."""
    encoder = Encoder(fmt, RATE)
    outputs = encode_in_pieces(encoder, tone(sum(PIECES)))
    assert all(outputs[:-1]), "every piece of the stream produced bytes before the end"
    received, lengths = b"", []
    for piece in outputs:
        received += piece
        lengths.append(len(decode(received, fmt)[0]))
    assert lengths[0] > 0 and lengths == sorted(lengths) and len(set(lengths)) == len(lengths)


def test_flac_comes_whole_with_its_totals():
    encoder = Encoder("flac", RATE)
    outputs = encode_in_pieces(encoder, tone(sum(PIECES)))
    assert not encoder.streaming and not any(outputs[:-1]) and outputs[-1].startswith(b"fLaC")


@pytest.mark.parametrize(
    "fmt, rate",
    [("mp3", 44100), ("mp3", 16000), ("opus", 48000), ("opus", 16000), ("aac", 44100), ("flac", 22050), ("wav", 8000)],
)
def test_sample_rates_the_codec_takes(fmt, rate):
    audio = tone(RATE)
    encoder = Encoder(fmt, rate, streaming=False)
    samples, decoded_rate = decode(encoder.encode(audio, last=True), fmt, rate)
    # Ogg Opus decoders may give 48 kHz whatever the input rate; the duration is what matters.
    assert decoded_rate == rate or fmt == "opus"
    assert_duration(len(samples), decoded_rate, 1.0, fmt, streamed=False)


@pytest.mark.parametrize("fmt, rate", [("opus", 22050), ("opus", 44100), ("mp3", 40000), ("aac", 30000)])
def test_sample_rates_the_codec_refuses_are_a_clear_400(fmt, rate):
    with pytest.raises(APIError) as caught:
        check_output(fmt, rate)
    assert caught.value.status == 400
    assert str(rate) in caught.value.message and fmt in caught.value.message and "allowed" in caught.value.message


@pytest.mark.parametrize("speed", [0.25, 0.5, 1.5, 2.0, 4.0])
def test_speed_changes_tempo_and_keeps_pitch(speed):
    audio = tone(2 * RATE)
    stretch = TimeStretch(speed, RATE)
    out = np.concatenate([stretch.process(audio[:20000]), stretch.process(audio[20000:], last=True)])
    assert len(out) / RATE == pytest.approx(2.0 / speed, rel=0.03)
    assert abs(dominant_frequency(out, RATE) - TONE_HZ) < 5


@pytest.mark.parametrize("speed", [0.2, 4.5, 0.0])
def test_speed_out_of_range_is_a_400(speed):
    with pytest.raises(APIError) as caught:
        Encoder("mp3", RATE, speed=speed)
    assert caught.value.status == 400 and "0.25-4" in caught.value.message
