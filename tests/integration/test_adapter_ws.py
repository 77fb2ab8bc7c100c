"""The WebSocket protocol (/ws/tts) against real processes (the adapter and a fake predictor)."""

from __future__ import annotations

import base64
import io
import json
from contextlib import contextmanager

import pytest
import requests
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from scripts.processes import free_port
from tests.support.servers import make_audio, start_adapter, wait_until

pytestmark = pytest.mark.slow


def receive(ws, timeout: float = 15) -> dict:
    return json.loads(ws.recv(timeout=timeout))


@contextmanager
def open_ws(server, query: str = "", **kwargs):
    with connect(server.ws_url + query, open_timeout=10, **kwargs) as ws:
        ready = receive(ws)
        assert ready["type"] == "ready", ready
        yield ws, ready


def collect(ws, ids: set) -> dict:
    """Read until every id in `ids` is done or failed; returns {id: {"chunks": [...], "end": msg}}."""
    results = {i: {"chunks": [], "end": None} for i in ids}
    while any(r["end"] is None for r in results.values()):
        msg = receive(ws)
        assert msg["id"] in results, msg
        if msg["type"] == "chunk":
            results[msg["id"]]["chunks"].append(msg)
        else:
            results[msg["id"]]["end"] = msg
    return results


@pytest.mark.parametrize("text", ["Hello, world!", "Hello [unflagged]"])
def test_ready_say_chunk_done(adapter, text):
    with open_ws(adapter) as (ws, ready):
        assert ready == {"type": "ready", "models": ["standard", "turbo"], "device": "cpu"}
        ws.send(json.dumps({"type": "say", "id": "r1", "text": text}))
        result = collect(ws, {"r1"})["r1"]
    assert result["end"] == {"type": "done", "id": "r1", "duration_seconds": 1.0}
    chunks = result["chunks"]
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert [c["is_last"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    sizes = [len(base64.b64decode(c["data"])) for c in chunks]
    if "[unflagged]" in text:
        # Without the predictor's final flag the end is only known after the last full piece has
        # gone out: an empty chunk carries is_last.
        assert sizes[-1] == 0
        sizes = sizes[:-1]
    assert set(sizes) == {24000 * 2 * 40 // 1000}  # default: pcm_s16le, 24 kHz, 40 ms


def test_no_audio_still_ends_with_one_last_chunk(adapter):
    with open_ws(adapter) as (ws, _):
        ws.send(json.dumps({"type": "say", "id": "e", "text": "nothing [empty]"}))
        result = collect(ws, {"e"})["e"]
    assert [(c["index"], c["data"], c["is_last"]) for c in result["chunks"]] == [(0, "", True)]
    assert result["end"]["type"] == "done" and result["end"]["duration_seconds"] == 0


@pytest.mark.parametrize("rate, ms, size", [(16000, 40, 1280), (22050, 20, 882), (48000, 100, 9600)])
def test_chunk_size_and_sample_rate_are_honoured(adapter, rate, ms, size):
    with open_ws(adapter) as (ws, _):
        ws.send(
            json.dumps(
                {
                    "type": "say",
                    "id": "c",
                    "text": "hi",
                    "audio": {"format": "pcm_s16le", "sample_rate": rate, "chunk_size_ms": ms},
                }
            )
        )
        result = collect(ws, {"c"})["c"]
    data = [base64.b64decode(c["data"]) for c in result["chunks"]]
    assert all(len(d) == size for d in data[:-1]) and 0 < len(data[-1]) <= size
    assert sum(map(len, data)) == rate * 2  # one second of audio


def test_wav_format_and_unstreamed_requests_give_playable_files(adapter):
    with open_ws(adapter) as (ws, _):
        ws.send(json.dumps({"type": "say", "id": "w", "text": "hi", "audio": {"format": "wav", "sample_rate": 16000}}))
        ws.send(json.dumps({"type": "say", "id": "whole", "text": "hi", "audio": {"format": "wav", "stream": False}}))
        results = collect(ws, {"w", "whole"})
    streamed = b"".join(base64.b64decode(c["data"]) for c in results["w"]["chunks"])
    data, rate = sf.read(io.BytesIO(streamed))
    assert rate == 16000 and len(data) == 16000
    whole = results["whole"]["chunks"]
    assert len(whole) == 1 and whole[0]["is_last"] and whole[0]["index"] == 0
    data, rate = sf.read(io.BytesIO(base64.b64decode(whole[0]["data"])))
    assert rate == 24000 and len(data) == 24000


def test_two_requests_on_one_connection_finish_under_their_own_ids(adapter):
    with open_ws(adapter) as (ws, _):
        ws.send(json.dumps({"type": "say", "id": "long", "text": "a [long]"}))
        ws.send(json.dumps({"type": "say", "id": 7, "text": "b"}))
        results = collect(ws, {"long", 7})
    assert results["long"]["end"]["duration_seconds"] == 3.0
    assert results[7]["end"] == {"type": "done", "id": 7, "duration_seconds": 1.0}


def test_an_id_in_progress_cannot_be_reused(adapter):
    with open_ws(adapter) as (ws, _):
        ws.send(json.dumps({"type": "say", "id": "same", "text": "[slow]"}))
        ws.send(json.dumps({"type": "say", "id": "same", "text": "again"}))
        while (msg := receive(ws))["type"] == "chunk":
            pass
        assert msg == {"type": "error", "id": "same", "code": 409, "message": msg["message"]}
        assert "in progress" in msg["message"]


@pytest.mark.parametrize(
    "message, code, words",
    [
        ("{not json", 400, ["JSON"]),
        ("[1, 2]", 400, ["object"]),
        ({"type": "dance", "id": "x"}, 400, ["dance"]),
        ({"id": "x", "text": "hi"}, 400, ["type"]),
        ({"type": "say", "id": "x"}, 422, ["text"]),
        ({"type": "say", "id": "x", "text": ""}, 422, ["text"]),
        ({"type": "say", "id": "x", "text": "x" * 5001}, 413, ["5000"]),
        ({"type": "say", "id": "x", "text": "hi", "voice": {"cfg_weight": 1.5}}, 422, ["voice.cfg_weight", "0.0-1.0"]),
        ({"type": "say", "id": "x", "text": "hi", "audio": {"chunk_size_ms": 0}}, 422, ["audio.chunk_size_ms"]),
        ({"type": "say", "id": "x", "text": "hi", "audio": {"format": "ogg"}}, 422, ["audio.format"]),
        (
            {"type": "say", "id": "x", "text": "hi", "voice": {"audio_prompt_path": "../../etc/passwd"}},
            400,
            ["not inside"],
        ),
        ({"type": "say", "id": "x", "text": "hi", "voice": {"audio_prompt_path": "absent.wav"}}, 404, ["absent.wav"]),
        ({"type": "say", "id": "x", "text": "hi [fail400]"}, 400, ["temperature"]),
        ({"type": "say", "id": "x", "text": "hi", "model": "multilingual"}, 404, ["multilingual"]),
        ({"type": "set_voice", "id": "x", "voice_path": "/etc/passwd"}, 400, ["not inside"]),
        ({"type": "set_voice", "id": "x"}, 422, ["voice_path"]),
    ],
)
def test_bad_messages_get_an_error_and_the_connection_stays_open(adapter, message, code, words):
    with open_ws(adapter) as (ws, _):
        ws.send(message if isinstance(message, str) else json.dumps(message))
        error = receive(ws)
        assert error["type"] == "error" and error["code"] == code, error
        assert error["id"] == (message.get("id") if isinstance(message, dict) else None)
        for word in words:
            assert word in error["message"], error
        ws.send(json.dumps({"type": "say", "id": "after", "text": "still here"}))
        assert collect(ws, {"after"})["after"]["end"]["type"] == "done"


def test_binary_frames_and_midstream_failures_are_errors_too(adapter):
    with open_ws(adapter) as (ws, _):
        ws.send(b"\x00\x01")
        assert receive(ws)["code"] == 400
        ws.send(json.dumps({"type": "say", "id": "m", "text": "[midfail]"}))
        result = collect(ws, {"m"})["m"]
        assert result["end"]["type"] == "error" and result["end"]["code"] == 502


def test_set_voice_applies_to_the_connection(adapter, adapter_voices_dir, fake_predictor):
    (adapter_voices_dir / "ws_voice.wav").write_bytes(make_audio(3))
    with open_ws(adapter) as (ws, _):
        ws.send(json.dumps({"type": "set_voice", "voice_path": str(adapter_voices_dir.resolve() / "ws_voice.wav")}))
        assert receive(ws) == {"type": "voice_set", "id": None, "voice_path": "ws_voice.wav", "persisted": False}
        ws.send(json.dumps({"type": "say", "id": "v", "text": "with my voice"}))
        collect(ws, {"v"})
        assert fake_predictor.last_request()["parameters"]["voice"] == "ws_voice.wav"
        ws.send(json.dumps({"type": "set_voice", "voice_path": None}))
        assert receive(ws)["voice_path"] is None
        ws.send(json.dumps({"type": "say", "id": "b", "text": "built-in"}))
        collect(ws, {"b"})
        assert "voice" not in fake_predictor.last_request()["parameters"]
    with open_ws(adapter) as (other, _):  # another connection is not affected
        other.send(json.dumps({"type": "say", "id": "o", "text": "other"}))
        collect(other, {"o"})
        assert "voice" not in fake_predictor.last_request()["parameters"]


def test_token_auth_closes_with_1008(adapter_factory, tmp_path):
    server = adapter_factory(tmp_path, API_TOKEN="s3cret")
    for kwargs in ({}, {"query": "?token=wrong"}, {"additional_headers": {"Authorization": "Bearer wrong"}}):
        with connect(server.ws_url + kwargs.pop("query", ""), open_timeout=10, **kwargs) as ws:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd.code == 1008
    for kwargs in ({"query": "?token=s3cret"}, {"additional_headers": {"Authorization": "Bearer s3cret"}}):
        with open_ws(server, **kwargs) as (ws, ready):
            assert ready["models"]


def test_ws_and_http_share_slots_and_a_closed_socket_cancels_upstream(adapter_factory, tmp_path, fake_predictor):
    server = adapter_factory(tmp_path, MAX_CONCURRENT_REQUESTS="1")
    before = fake_predictor.state()["cancelled"]
    with open_ws(server) as (ws, _):
        ws.send(json.dumps({"type": "say", "id": "slow", "text": "[slow]"}))
        assert receive(ws)["type"] == "chunk"
        ws.send(json.dumps({"type": "say", "id": "extra", "text": "no room"}))
        while (msg := receive(ws))["type"] == "chunk":
            pass
        assert msg["type"] == "error" and msg["id"] == "extra" and msg["code"] == 429
        busy = requests.post(f"{server.url}/api/tts", json={"text": "http"}, timeout=10)
        assert busy.status_code == 429 and busy.headers["Retry-After"]
    # Leaving the block closed the socket: the adapter must cancel upstream and free the slot.
    assert wait_until(lambda: fake_predictor.state()["cancelled"] > before)
    assert wait_until(lambda: requests.post(f"{server.url}/api/tts", json={"text": "x"}, timeout=10).status_code == 200)


def test_predictor_down_at_connect(adapter_voices_dir, adapter_log_dir):
    server = start_adapter(f"http://127.0.0.1:{free_port()}", adapter_voices_dir, adapter_log_dir)
    try:
        with connect(server.ws_url, open_timeout=10) as ws:
            error = receive(ws)
            assert error["type"] == "error" and error["code"] == 503
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd.code == 1013
    finally:
        server.stop()
