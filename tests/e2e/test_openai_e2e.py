"""The OpenAI-compatible API through the real path: the adapter process in front of the real predictor
(real chatterbox code, random weights), called with the official `openai` SDK and websockets; every
format decoded by an independent decoder (tests/support/decoding.py)."""

from __future__ import annotations

import base64
import json
import re

import openai
import pytest
import requests
from websockets.sync.client import connect

from tests.support.decoding import assert_duration, decode
from tests.support.servers import start_adapter, start_turbo_predictor
from tests.support.sse import sse_events

pytestmark = pytest.mark.slow

# The same seed gives the same speech tokens, streamed or not: the pcm answer is what was generated.
SAME_SPEECH = {"seed": 7, "max_new_tokens": 12}


@pytest.fixture(scope="module")
def adapter(real_adapter):
    return real_adapter


@pytest.fixture(scope="module")
def client(adapter) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{adapter.url}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def generated_seconds(client) -> float:
    pcm = client.audio.speech.create(
        model="tts-1", voice="alice", input="Exactly the same.", response_format="pcm", extra_body=SAME_SPEECH
    ).read()
    assert len(pcm) > 0 and len(pcm) % (2 * 960) == 0  # whole speech tokens of 16-bit samples
    return len(pcm) / 2 / 24000


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_sdk_formats_from_the_real_predictor(client, generated_seconds, fmt):
    audio = client.audio.speech.create(
        model="tts-1", voice="alice", input="Exactly the same.", response_format=fmt, extra_body=SAME_SPEECH
    ).read()
    samples, rate = decode(audio, fmt)
    assert_duration(len(samples), rate, generated_seconds, fmt, streamed=fmt != "flac")


def in_flight(predictor) -> float:
    text = requests.get(f"{predictor.http_url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r'^chatterbox_requests_in_flight\{model="turbo"\} (\S+)$', text, re.M))


@pytest.fixture(scope="module")
def long_generation(weights_dir, voices_dir, tmp_path_factory):
    """A turbo-only predictor whose cap allows a generation long enough to be caught in flight (the
    shared predictor caps every request at 40 tokens, which can end before the first mp3 frame)."""
    # DTYPE=auto: nothing here compares samples with upstream, and bf16 makes the long generation quicker.
    predictor = start_turbo_predictor(weights_dir, voices_dir, MAX_NEW_TOKENS="400", DTYPE="auto")
    adapter = start_adapter(predictor.http_url, voices_dir, tmp_path_factory.mktemp("long-logs"))
    client = openai.OpenAI(base_url=f"{adapter.url}/v1", api_key="unused", max_retries=0, timeout=600)
    yield predictor, client
    adapter.stop()
    predictor.stop()


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_first_bytes_arrive_while_the_predictor_still_generates(long_generation, fmt):
    predictor, client = long_generation
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alice",
        input="A longer sentence, so that generation runs to the server's token cap and takes a while.",
        response_format=fmt,
        extra_body={"seed": 3, "max_new_tokens": 150},
    ) as response:
        # One pass over the body (the SDK's stream can be read only once): note when the bytes so far
        # first decode to audio, and check then that the predictor is still generating.
        received, first = b"", b""
        for piece in response.iter_bytes():
            received += piece
            if not first and len(decode(received, fmt)[0]) > 0:
                first = received
                assert in_flight(predictor) == 1, "the predictor is still generating this request"
    assert first, "no decodable audio arrived"
    samples, _ = decode(received, fmt)
    assert len(samples) > len(decode(first, fmt)[0])


def test_sse_usage_counts_the_speech_tokens(client, generated_seconds):
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alice",
        input="Exactly the same.",
        response_format="mp3",
        stream_format="sse",
        extra_body=SAME_SPEECH,
    ) as response:
        events = sse_events(response.iter_lines())
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    samples, rate = decode(audio, "mp3")
    assert_duration(len(samples), rate, generated_seconds, "mp3", streamed=True)
    # tts-1 is turbo, whose audio carries three silence tokens after the speech (and its meanflow
    # decoder may end up to one token early): the speech tokens are the audio's tokens less 2 or 3.
    audio_tokens = round(generated_seconds * 25)
    assert events[-1]["usage"]["output_tokens"] in (audio_tokens - 3, audio_tokens - 2), events[-1]["usage"]


def test_seed_websocket_opus_from_the_real_predictor(adapter):
    with connect(adapter.ws_url, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        say = {
            "type": "say",
            "id": "o",
            "text": "Ogg pages as they come.",
            "model": "turbo",
            "audio": {"format": "opus"},
        }
        ws.send(json.dumps({**say, "voice": {"audio_prompt_path": "alice.wav", "seed": 5}}))
        received, lengths = b"", []
        while (msg := json.loads(ws.recv(timeout=300)))["type"] == "chunk":
            received += base64.b64decode(msg["data"])
            lengths.append(len(decode(received, "opus")[0]))
    assert msg["type"] == "done", msg
    assert lengths == sorted(lengths) and lengths[0] > 0
    assert_duration(lengths[-1], 24000, msg["duration_seconds"], "opus", streamed=True)
