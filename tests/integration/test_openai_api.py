"""The OpenAI-compatible routes and the compressed formats of the seed API, against real processes
(the adapter and the predictor's sine-wave test double), called by clients no one here wrote: the
official `openai` SDK, aiohttp as Open WebUI sends its request, requests and websockets.
Every response is decoded by an independent decoder (tests/support/decoding.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import aiohttp
import openai
import pytest
import requests
from websockets.sync.client import connect

from tests.support.decoding import assert_duration, decode, dominant_frequency
from tests.support.servers import make_audio, wait_until
from tests.support.sse import sse_events

pytestmark = pytest.mark.slow

FAKE_SECONDS = 1.0  # the test double's default answer: four 0.25 s chunks of a 220 Hz sine
FAKE_SPEECH_TOKENS = 24
FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]


@pytest.fixture(scope="module")
def client(adapter) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{adapter.url}/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def library_voice(adapter_voices_dir) -> str:
    (adapter_voices_dir / "openai_alice.wav").write_bytes(make_audio(3))
    return "openai_alice"


@pytest.mark.parametrize("fmt", FORMATS)
def test_sdk_create_returns_each_format(client, fake_predictor, fmt):
    response = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.", response_format=fmt)
    samples, rate = decode(response.read(), fmt)
    assert rate == 24000
    assert_duration(len(samples), rate, FAKE_SECONDS, fmt, streamed=fmt != "flac")
    assert abs(dominant_frequency(samples[2048:], rate) - 220) < 5
    request = fake_predictor.last_request()
    assert request["model"] == "turbo" and request["incremental"] is True  # tts-1: turbo, which is loaded
    assert "voice" not in request["parameters"]  # alloy: the default voice (none set: the model's own)


def test_whole_files_on_request_have_exact_lengths(client, fake_predictor):
    """Kokoro-FastAPI's `stream: false`: the whole mp3 with its LAME/Xing frame, exact to the sample."""
    response = client.audio.speech.create(
        model="tts-1-hd", voice="alloy", input="Whole.", response_format="mp3", extra_body={"stream": False}
    )
    samples, rate = decode(response.read(), "mp3")
    assert len(samples) == FAKE_SECONDS * rate
    assert fake_predictor.last_request()["model"] == "standard"


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_streamed_audio_arrives_before_generation_ends(client, fake_predictor, fmt):
    """The [slow] marker makes the double generate for 20 s; the first bytes must come long before,
    decode on their own, and hanging up must stop generation."""
    before = fake_predictor.state()
    started = time.monotonic()
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Slowly [slow]", response_format=fmt
    ) as response:
        assert response.headers["content-type"] == {"mp3": "audio/mpeg", "opus": "audio/ogg"}[fmt]
        received = b""
        for piece in response.iter_bytes():
            received += piece
            if len(decode(received, fmt)[0]) > 0:
                break
        # Generation takes 20 s; it has not completed when the first bytes are here.
        assert fake_predictor.state()["completed"] == before["completed"]
    assert time.monotonic() - started < 10
    assert wait_until(lambda: fake_predictor.state()["cancelled"] > before["cancelled"], timeout=10)


def test_sse_stream_carries_one_stream_and_usage(client, fake_predictor):
    text = "Server-sent events."
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format="opus", stream_format="sse"
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) > 1 and events[-1]["type"] == "speech.audio.done" and events[:-1] == deltas
    assert events[-1]["usage"] == {
        "input_tokens": len(text),
        "output_tokens": FAKE_SPEECH_TOKENS,
        "total_tokens": len(text) + FAKE_SPEECH_TOKENS,
    }
    samples, rate = decode(b"".join(base64.b64decode(e["audio"]) for e in deltas), "opus")
    assert_duration(len(samples), rate, FAKE_SECONDS, "opus", streamed=True)


def test_chatterbox_parameters_voice_and_speed(client, fake_predictor, library_voice):
    response = client.audio.speech.create(
        model="turbo",
        voice={"id": library_voice},
        input="Faster.",
        response_format="wav",
        speed=2.0,
        extra_body={"exaggeration": 0.7, "cfg_weight": 0.3, "temperature": 0.5, "seed": 11, "top_p": 0.9},
    )
    samples, rate = decode(response.read(), "wav")
    assert len(samples) / rate == pytest.approx(FAKE_SECONDS / 2, rel=0.05)
    assert abs(dominant_frequency(samples, rate) - 220) < 5  # pitch kept
    parameters = fake_predictor.last_request()["parameters"]
    parameters.pop("language_id", None)  # the adapter sends the table's default with every request
    assert parameters == {
        "voice": "openai_alice.wav",
        "exaggeration": 0.7,
        "cfg_weight": 0.3,
        "temperature": 0.5,
        "seed": 11,
        "top_p": 0.9,
    }


@pytest.mark.parametrize(
    "kwargs, param, words",
    [
        ({"model": "whisper-1"}, None, ["model 'whisper-1' is not served", "served models: tts-1", "turbo"]),
        ({"model": "multilingual"}, None, ["not served", "standard, turbo"]),
        ({"voice": "nobody"}, None, ["voice 'nobody'", "/v1/audio/voices"]),
        ({"speed": 5.0}, "speed", ["speed", "less than or equal to 4", "0.25-4"]),
        ({"response_format": "ogg"}, "response_format", ["response_format"]),
        ({"extra_body": {"exaggeration": 3}}, "exaggeration", ["exaggeration", "0.0-2.0"]),
        ({"extra_body": {"temprature": 1}}, "temprature", ["temprature"]),
        ({"input": "   "}, "input", ["input must not be empty"]),
    ],
)
def test_errors_raise_in_the_sdk_with_the_servers_message(client, kwargs, param, words):
    request = {"model": "tts-1", "voice": "alloy", "input": "hi", **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(**request)
    error = caught.value
    assert set(error.body) == {"message", "type", "param", "code"} and error.type == "invalid_request_error"
    assert error.param == param
    for word in words:
        assert word in error.message, error.message


def test_too_long_input_and_the_service_stays_up(client):
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 5001)
    assert caught.value.status_code == 413 and "MAX_TEXT_LENGTH" in caught.value.message
    assert client.audio.speech.create(model="tts-1", voice="alloy", input="still here").read()


def test_bearer_token_is_what_the_sdk_sends(adapter_factory, adapter_voices_dir):
    server = adapter_factory(adapter_voices_dir, API_TOKEN="s3cret")
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="guess", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.audio.speech.create(model="tts-1", voice="alloy", input="hi")
    assert "API token" in caught.value.message and caught.value.code == "invalid_api_key"
    right = openai.OpenAI(base_url=f"{server.url}/v1", api_key="s3cret", max_retries=0)
    assert decode(right.audio.speech.create(model="tts-1", voice="alloy", input="hi").read(), "mp3")[0].size


def test_open_webui_request_as_it_sends_it_gets_mp3(adapter, tmp_path):
    """Open WebUI (routers/audio.py): aiohttp, the browser's {"input", "voice"} plus the configured
    model, no response_format; it saves the body as an .mp3 file and serves that."""

    async def open_webui_speech() -> tuple[int, str, bytes]:
        payload = {"input": "Hello from Open WebUI.", "voice": "alloy"}
        payload["model"] = "tts-1"
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as session:  # noqa: SIM117 (as Open WebUI writes it)
            async with session.post(
                url=f"{adapter.url}/v1/audio/speech",
                json=payload,
                headers={"Content-Type": "application/json", "Authorization": "Bearer sk-anything"},
            ) as r:
                r.raise_for_status()
                return r.status, r.headers["Content-Type"], await r.read()

    status, content_type, body = asyncio.run(open_webui_speech())
    assert status == 200 and content_type == "audio/mpeg"
    file_path = tmp_path / "speech.mp3"
    file_path.write_bytes(body)
    samples, rate = decode(file_path.read_bytes(), "mp3")
    assert_duration(len(samples), rate, FAKE_SECONDS, "mp3", streamed=True)


def test_model_and_voice_lists(client, adapter, library_voice):
    models = {m.id: m.model_extra["variant"] for m in client.models.list().data}
    assert models == {
        "tts-1": "turbo",
        "tts-1-hd": "standard",
        "gpt-4o-mini-tts": "standard",
        "gpt-4o-mini-tts-2025-12-15": "standard",
        "standard": "standard",
        "turbo": "turbo",
    }
    assert client.models.retrieve("tts-1").id == "tts-1"
    assert requests.get(f"{adapter.url}/v1/audio/models", timeout=10).json()["models"][0] == {"id": "tts-1"}
    voices = requests.get(f"{adapter.url}/v1/audio/voices", timeout=10).json()["voices"]
    assert {"id": "openai_alice.wav", "name": "openai_alice", "library": True} in voices
    assert {"id": "alloy", "name": "alloy", "library": False} in voices


# --- the same formats on the seed API ---------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac"])
def test_seed_http_compressed_formats(adapter, fmt, stream):
    r = requests.post(
        f"{adapter.url}/api/tts", json={"text": "Seed.", "audio": {"format": fmt, "stream": stream}}, timeout=30
    )
    assert r.status_code == 200, r.text
    samples, rate = decode(r.content, fmt)
    assert_duration(len(samples), rate, FAKE_SECONDS, fmt, streamed=stream and fmt != "flac")
    assert float(r.headers.get("X-Audio-Duration-Seconds", FAKE_SECONDS)) == pytest.approx(FAKE_SECONDS)


@pytest.mark.parametrize("fmt, rate", [("mp3", 44100), ("opus", 48000), ("aac", 16000)])
def test_seed_sample_rates_the_codec_takes(adapter, fmt, rate):
    body = {"text": "Rate.", "audio": {"format": fmt, "sample_rate": rate, "stream": True}}
    r = requests.post(f"{adapter.url}/api/tts", json=body, timeout=30)
    assert r.status_code == 200 and r.headers["X-Sample-Rate"] == str(rate)
    samples, decoded_rate = decode(r.content, fmt, rate)
    assert_duration(len(samples), decoded_rate, FAKE_SECONDS, fmt, streamed=True)


def test_seed_http_streamed_mp3_comes_as_generated(adapter, fake_predictor):
    completed = fake_predictor.state()["completed"]
    body = {"text": "Slow [slow]", "audio": {"format": "mp3", "stream": True}}
    with requests.post(f"{adapter.url}/api/tts", json=body, stream=True, timeout=30) as r:
        first = next(r.iter_content(chunk_size=None))
        # Generation takes 20 s; it has not completed when the first bytes are here.
        assert first.startswith(b"ID3") and fake_predictor.state()["completed"] == completed


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac"])
def test_seed_ws_chunks_continue_one_stream(adapter, fmt):
    """Each chunk message carries whole frames/pages: what has arrived always decodes, and grows."""
    with connect(adapter.ws_url, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        ws.send(json.dumps({"type": "say", "id": "c", "text": "Chunks [long]", "audio": {"format": fmt}}))
        received, lengths = b"", []
        while True:
            msg = json.loads(ws.recv(timeout=15))
            if msg["type"] == "done":
                break
            assert msg["type"] == "chunk", msg
            received += base64.b64decode(msg["data"])
            lengths.append(len(decode(received, fmt)[0]))
    assert len(lengths) > 2 and lengths == sorted(lengths) and lengths[0] > 0
    assert_duration(lengths[-1], 24000, 3.0, fmt, streamed=True)
    assert msg["duration_seconds"] == pytest.approx(3.0)


def test_seed_ws_whole_flac_and_a_refused_rate(adapter):
    with connect(adapter.ws_url, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        ws.send(
            json.dumps({"type": "say", "id": "bad", "text": "hi", "audio": {"format": "opus", "sample_rate": 22050}})
        )
        error = json.loads(ws.recv(timeout=10))
        assert error["type"] == "error" and error["code"] == 400 and "22050" in error["message"]
        ws.send(json.dumps({"type": "say", "id": "f", "text": "hi", "audio": {"format": "flac"}}))
        chunk = json.loads(ws.recv(timeout=15))
        assert chunk["is_last"] and json.loads(ws.recv(timeout=15))["type"] == "done"
    samples, rate = decode(base64.b64decode(chunk["data"]), "flac")
    assert len(samples) == FAKE_SECONDS * rate
