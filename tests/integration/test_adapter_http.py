"""The adapter's HTTP API, against real processes (the adapter and a fake predictor)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import requests
import soundfile as sf

from scripts.processes import free_port
from tests.support.servers import make_audio, start_adapter, wait_until

pytestmark = pytest.mark.slow


def tts(server, body: dict, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 30)
    return requests.post(f"{server.url}/api/tts", json=body, **kwargs)


def assert_error(response: requests.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.content[:300]
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == status
    message = body["error"]["message"]
    for word in words:
        assert word in message, message
    return message


@pytest.fixture
def clean_default(adapter_voices_dir):
    yield
    (adapter_voices_dir / ".default_voice.json").unlink(missing_ok=True)


# --- health -----------------------------------------------------------------------------------


def test_health_reflects_the_predictor(adapter, fake_predictor):
    body = requests.get(f"{adapter.url}/health", timeout=10).json()
    assert body == {
        "status": "healthy",
        "loaded_models": ["standard", "turbo"],
        "device": "cpu",
        "version": "0.1.0-fake",
    }
    fake_predictor.set_ready(False)
    try:
        response = requests.get(f"{adapter.url}/health", timeout=10)
        assert response.status_code == 503 and response.json()["status"] == "predictor_not_ready"
    finally:
        fake_predictor.set_ready(True)


def test_predictor_down_gives_503_everywhere(adapter_voices_dir, adapter_log_dir):
    server = start_adapter(f"http://127.0.0.1:{free_port()}", adapter_voices_dir, adapter_log_dir)
    try:
        response = requests.get(f"{server.url}/health", timeout=10)
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "predictor_unavailable" and body["loaded_models"] == []
        assert body["error"]["code"] == 503
        assert_error(tts(server, {"text": "hello"}), 503, "unreachable")
    finally:
        server.stop()


def test_bad_configuration_stops_at_start_up(adapter_voices_dir):
    env = {**os.environ, "VOICES_DIR": str(adapter_voices_dir), "DEFAULT_VOICE": "../elsewhere.wav", "PORT": "1"}
    result = subprocess.run([sys.executable, "-m", "adapter"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "DEFAULT_VOICE" in result.stderr
    env.update(DEFAULT_VOICE="", MAX_TEXT_LENGTH="lots")
    result = subprocess.run([sys.executable, "-m", "adapter"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "MAX_TEXT_LENGTH" in result.stderr


# --- synthesis --------------------------------------------------------------------------------


def test_wav_by_default(adapter):
    response = tts(adapter, {"text": "Hello, world!"})
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    data, rate = sf.read(io.BytesIO(response.content))
    assert rate == 24000 and len(data) == 24000
    assert response.headers["x-audio-duration-seconds"] == "1.000"


@pytest.mark.parametrize("fmt", ["pcm", "pcm_s16le"])
def test_pcm_resampled(adapter, fmt):
    response = tts(adapter, {"text": "hi", "audio": {"format": fmt, "sample_rate": 16000}})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-sample-rate"] == "16000" and response.headers["x-audio-format"] == "pcm_s16le"
    assert len(response.content) == 16000 * 2


def test_streaming_wav_uses_chunked_transfer_and_an_open_ended_header(adapter):
    with tts(adapter, {"text": "hi [long]", "audio": {"stream": True, "sample_rate": 22050}}, stream=True) as r:
        assert r.status_code == 200 and r.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in r.headers
        content = b"".join(r.iter_content(None))
    assert content[4:8] == b"\xff\xff\xff\xff"
    data, rate = sf.read(io.BytesIO(content))
    assert rate == 22050 and len(data) == 3 * 22050


def test_streaming_pcm_with_chunk_size(adapter):
    body = {"text": "hi", "audio": {"stream": True, "format": "pcm", "sample_rate": 16000, "chunk_size_ms": 40}}
    with tts(adapter, body, stream=True) as r:
        content = b"".join(r.iter_content(None))
    assert len(content) == 16000 * 2


def test_parameters_reach_the_predictor(adapter, fake_predictor):
    voice = {
        "exaggeration": 0.7,
        "cfg_weight": 0.3,
        "temperature": 0.9,
        "top_p": 0.9,
        "repetition_penalty": 1.3,
        "min_p": 0.1,
        "top_k": 50,
        "seed": 42,
        "max_new_tokens": 100,
    }
    assert tts(adapter, {"text": "params", "model": "turbo", "language_id": "fr", "voice": voice}).status_code == 200
    sent = fake_predictor.last_request()
    assert sent["model"] == "turbo" and sent["text_input"] == "params"
    assert sent["parameters"] == voice  # language_id only goes to the multilingual model


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"text": ""}, 422, ["text"]),
        ({"text": "   "}, 422, ["text"]),
        ({}, 422, ["text"]),
        ({"text": "x" * 5001}, 413, ["5000"]),
        ({"text": "hi", "voice": {"temperature": 2}}, 422, ["voice.temperature", "0.1-1.5"]),
        ({"text": "hi", "voice": {"top_k": 0}}, 422, ["voice.top_k"]),
        ({"text": "hi", "voice": {"seed": -1}}, 422, ["voice.seed"]),
        ({"text": "hi", "voice": {"repetition_penalty": 0.5}}, 422, ["voice.repetition_penalty"]),
        ({"text": "hi", "voice": {"temprature": 1}}, 422, ["voice.temprature"]),
        ({"text": "hi", "audio": {"sample_rate": 1000}}, 422, ["audio.sample_rate"]),
        ({"text": "hi", "audio": {"format": "mp3"}}, 422, ["audio.format"]),
        ({"text": "hi", "model": "huge"}, 422, ["model"]),
        ({"text": "hi", "voice": {"audio_prompt_path": "../outside.wav"}}, 400, ["not inside"]),
        ({"text": "hi", "voice": {"audio_prompt_path": "/etc/passwd"}}, 400, ["not inside"]),
        ({"text": "hi", "voice": {"audio_prompt_path": "missing.wav"}}, 404, ["missing.wav"]),
        ({"text": "hi", "model": "multilingual"}, 404, ["multilingual"]),  # relayed from the predictor
        ({"text": "hi [fail400]"}, 400, ["temperature"]),  # relayed from the predictor
        ({"text": "hi [midfail]"}, 502, ["mid-stream"]),
    ],
)
def test_bad_input_gets_its_4xx_and_the_service_stays_up(adapter, body, status, words):
    assert_error(tts(adapter, body), status, *words)
    assert requests.get(f"{adapter.url}/health", timeout=10).status_code == 200


def test_symlink_out_of_the_folder_is_refused_like_any_outside_path(adapter, adapter_voices_dir, tmp_path):
    outside = tmp_path / "real.wav"
    outside.write_bytes(make_audio(3))
    os.symlink(outside, adapter_voices_dir / "sneaky.wav")
    try:
        assert_error(tts(adapter, {"text": "hi", "voice": {"audio_prompt_path": "sneaky.wav"}}), 400, "not inside")
        names = [v["name"] for v in requests.get(f"{adapter.url}/api/voices", timeout=10).json()["voices"]]
        assert "sneaky.wav" not in names
    finally:
        (adapter_voices_dir / "sneaky.wav").unlink()


def test_malformed_json_unknown_routes_and_methods_share_the_error_shape(adapter):
    response = requests.post(
        f"{adapter.url}/api/tts", data="{oops", headers={"content-type": "application/json"}, timeout=10
    )
    assert_error(response, 400, "JSON")
    assert_error(requests.get(f"{adapter.url}/nothing-here", timeout=10), 404)
    assert_error(requests.delete(f"{adapter.url}/api/tts", timeout=10), 405)


def test_streaming_failure_after_start_breaks_the_transfer(adapter):
    with (
        pytest.raises(requests.exceptions.ChunkedEncodingError),
        tts(adapter, {"text": "[midfail]", "audio": {"stream": True}}, stream=True) as r,
    ):
        assert r.status_code == 200  # the first chunk had arrived before the failure
        b"".join(r.iter_content(None))


# --- voices -----------------------------------------------------------------------------------


def upload(server, data: bytes, filename: str, **kwargs) -> requests.Response:
    return requests.post(f"{server.url}/api/voices/upload", files={"file": (filename, data)}, timeout=30, **kwargs)


def test_upload_list_default_and_synthesise(adapter, fake_predictor, adapter_voices_dir, clean_default):
    created = upload(adapter, make_audio(6), "flow_voice.wav")
    assert created.status_code == 201, created.text
    assert created.json()["turbo_ok"] is True and created.json()["name"] == "flow_voice.wav"
    assert upload(adapter, make_audio(3, fmt="MP3"), "flow_short.mp3").json()["turbo_ok"] is False

    voices = {v["name"]: v for v in requests.get(f"{adapter.url}/api/voices", timeout=10).json()["voices"]}
    assert voices["flow_voice.wav"]["duration_seconds"] == 6.0 and voices["flow_voice.wav"]["sample_rate"] == 16000
    assert voices["flow_voice.wav"]["size_bytes"] == len(make_audio(6))
    assert not any(name.startswith(".") for name in voices)

    assert requests.get(f"{adapter.url}/api/voice/default", timeout=10).json()["voice_path"] is None
    tts(adapter, {"text": "built-in"})
    assert "voice" not in fake_predictor.last_request()["parameters"]

    set_default = requests.post(f"{adapter.url}/api/voice/default", json={"voice_path": "flow_voice.wav"}, timeout=10)
    assert set_default.json() == {"voice_path": "flow_voice.wav", "source": "api"}
    assert tts(adapter, {"text": "with default"}).status_code == 200
    assert fake_predictor.last_request()["parameters"]["voice"] == "flow_voice.wav"
    # The seed's absolute form (VOICES_DIR/name) works too and is sent as the relative name.
    absolute = str(adapter_voices_dir.resolve() / "flow_short.mp3")
    assert tts(adapter, {"text": "explicit", "voice": {"audio_prompt_path": absolute}}).status_code == 200
    assert fake_predictor.last_request()["parameters"]["voice"] == "flow_short.mp3"

    assert_error(requests.post(f"{adapter.url}/api/voice/default", json={"voice_path": "../x.wav"}, timeout=10), 400)
    assert_error(requests.post(f"{adapter.url}/api/voice/default", json={"voice_path": "gone.wav"}, timeout=10), 404)
    assert requests.post(f"{adapter.url}/api/voice/default", json={"voice_path": None}, timeout=10).ok
    assert requests.get(f"{adapter.url}/api/voice/default", timeout=10).json()["voice_path"] is None


def test_upload_refusals(adapter):
    assert upload(adapter, make_audio(3), "dup.wav").status_code == 201
    assert_error(upload(adapter, make_audio(3), "dup.wav"), 409, "dup.wav", "overwrite")
    replaced = upload(adapter, make_audio(4), "dup.wav", params={"overwrite": "true"})
    assert replaced.status_code == 201 and replaced.json()["overwritten"] is True
    form_overwrite = requests.post(
        f"{adapter.url}/api/voices/upload",
        files={"file": ("dup.wav", make_audio(5))},
        data={"overwrite": "true"},
        timeout=30,
    )
    assert form_overwrite.status_code == 201
    assert_error(upload(adapter, b"RIFF....WAVEfmt garbage" * 50, "fake.wav"), 415, "audio")
    assert_error(upload(adapter, make_audio(1), "tiny.wav"), 422, "duration")
    assert_error(requests.post(f"{adapter.url}/api/voices/upload", json={"file": "x"}, timeout=10), 415)
    assert_error(
        requests.post(f"{adapter.url}/api/voices/upload", files={"other": ("a.wav", b"x")}, timeout=10), 400, "file"
    )
    renamed = upload(adapter, make_audio(3), "ignored.wav", params={"name": "../../named voice"})
    assert renamed.status_code == 201 and renamed.json()["name"] == "named voice.wav"


def test_default_upload_limit_is_20_mib(adapter, adapter_voices_dir):
    assert_error(upload(adapter, b"\0" * (20 * 1024 * 1024 + 1), "huge.wav"), 413, str(20 * 1024 * 1024))
    assert not (adapter_voices_dir / "huge.wav").exists()


def test_upload_size_limit_is_enforced_while_reading(adapter_factory, tmp_path):
    server = adapter_factory(tmp_path, MAX_UPLOAD_BYTES="100000")
    big = make_audio(4)  # 128 KB of 16 kHz PCM
    assert_error(upload(server, big, "big.wav"), 413, "100000")

    def chunked():  # no Content-Length: the limit must hold while streaming
        boundary = b"--XyZ"
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for i in range(0, len(big) * 2, 16384):
            yield (big * 2)[i : i + 16384]
        yield b"\r\n" + boundary + b"--\r\n"

    response = requests.post(
        f"{server.url}/api/voices/upload",
        data=chunked(),
        timeout=30,
        headers={"content-type": "multipart/form-data; boundary=XyZ"},
    )
    assert_error(response, 413)
    assert list(tmp_path.iterdir()) == []
    assert upload(server, make_audio(2.5), "fits.wav").status_code == 201
    assert requests.get(f"{server.url}/api/voices", timeout=10).json()["voices"][0]["name"] == "fits.wav"


def test_two_replicas_share_the_default_voice(adapter, adapter_factory, adapter_voices_dir, clean_default):
    assert upload(adapter, make_audio(3), "shared.wav").status_code in (201, 409)
    other = adapter_factory(adapter_voices_dir, DEFAULT_VOICE="dup.wav")
    assert requests.get(f"{other.url}/api/voice/default", timeout=10).json() == {
        "voice_path": "dup.wav",
        "source": "env",
    }
    requests.post(f"{adapter.url}/api/voice/default", json={"voice_path": "shared.wav"}, timeout=10).raise_for_status()
    assert requests.get(f"{other.url}/api/voice/default", timeout=10).json() == {
        "voice_path": "shared.wav",
        "source": "api",
    }
    requests.post(f"{other.url}/api/voice/default", json={"voice_path": None}, timeout=10).raise_for_status()
    assert requests.get(f"{adapter.url}/api/voice/default", timeout=10).json()["voice_path"] is None


# --- auth, limits, cancellation, service routes -----------------------------------------------


def test_token_protects_everything_but_health(adapter_factory, tmp_path):
    server = adapter_factory(tmp_path, API_TOKEN="s3cret")
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
    for path in ("/api/voices", "/api/voice/default", "/metrics", "/openapi.json", "/docs"):
        assert_error(requests.get(f"{server.url}{path}", timeout=10), 401, "token")
        assert_error(requests.get(f"{server.url}{path}", headers={"Authorization": "Bearer nope"}, timeout=10), 401)
    assert_error(tts(server, {"text": "hi"}), 401)
    ok = requests.get(f"{server.url}/api/voices", headers={"Authorization": "Bearer s3cret"}, timeout=10)
    assert ok.status_code == 200
    assert tts(server, {"text": "hi"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_slots_429_then_freed_when_the_client_goes_away(adapter_factory, tmp_path, fake_predictor):
    server = adapter_factory(tmp_path, MAX_CONCURRENT_REQUESTS="1")
    before = fake_predictor.state()["cancelled"]
    with tts(server, {"text": "[slow]", "audio": {"stream": True}}, stream=True) as held:
        assert held.status_code == 200
        held.raw.read(64)  # (a discarded iter_content generator would close the connection)
        busy = tts(server, {"text": "second"})
        assert_error(busy, 429, "MAX_CONCURRENT_REQUESTS")
        assert busy.headers["Retry-After"] == "1"
    # Closing the response hangs up; the adapter must cancel upstream and free its slot.
    assert wait_until(lambda: fake_predictor.state()["cancelled"] > before)
    assert wait_until(lambda: tts(server, {"text": "again"}).status_code == 200)

    # A non-streaming request whose client gives up is cancelled too.
    before = fake_predictor.state()["cancelled"]
    with pytest.raises(requests.exceptions.ReadTimeout):
        tts(server, {"text": "[slow]"}, timeout=0.6)
    assert wait_until(lambda: fake_predictor.state()["cancelled"] > before)
    assert wait_until(lambda: tts(server, {"text": "again"}).status_code == 200)
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert "adapter_synthesis_in_flight 0.0" in metrics


def test_metrics_and_openapi(adapter):
    tts(adapter, {"text": "for metrics"})
    text = requests.get(f"{adapter.url}/metrics", timeout=10).text
    for name in (
        "adapter_http_requests_total",
        "adapter_synthesis_in_flight",
        "adapter_time_to_first_audio_seconds",
        "adapter_websocket_connections",
    ):
        assert name in text
    assert 'route="/api/tts"' in text
    schema = requests.get(f"{adapter.url}/openapi.json", timeout=10).json()
    assert {"/health", "/api/tts", "/api/voices", "/api/voice/default", "/api/voices/upload", "/metrics"} <= set(
        schema["paths"]
    )
    assert "/ws/tts" in schema["info"]["description"]
