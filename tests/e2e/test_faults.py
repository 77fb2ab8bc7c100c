"""Predictor faults seen through the adapter (issue 13.2): a predictor killed mid-stream, one that
comes back on the same address, and one that hangs with its socket open. The predictor here is the
sine-wave double (a real process, killed and stopped for real): a crash looks the same from the
adapter whatever the process was computing."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time

import pytest
import requests
import websockets

from tests.support.servers import start_adapter, start_fake_predictor

pytestmark = pytest.mark.slow

STREAM = {"audio": {"format": "pcm", "stream": True}}
# Answers while the predictor is down must not wait for any timeout.
QUICK_S = 2.0
BACK_WITHIN_S = 10.0


def _first_ws_chunk(ws_url: str, text: str):
    async def opened():
        ws = await websockets.connect(ws_url)
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "say", "id": "s", "text": text}))
        assert json.loads(await ws.recv())["type"] == "chunk"
        return ws

    return opened()


async def _next_non_chunk(ws, wait_s: float) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), wait_s))
        if message["type"] != "chunk":
            return message


def _open_http_stream(url: str, text: str):
    response = requests.post(f"{url}/api/tts", json={"text": text, **STREAM}, stream=True, timeout=60)
    assert response.status_code == 200, response.text
    body = response.iter_content(chunk_size=None)
    assert next(body)
    return body


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_predictor_killed_mid_stream_then_back_on_the_same_address(tmp_path):
    voices, logs = tmp_path / "voices", tmp_path / "logs"
    voices.mkdir()
    logs.mkdir()
    fake = start_fake_predictor(voices, logs)
    adapter = start_adapter(fake.url, voices, logs)
    try:
        http_body = _open_http_stream(adapter.url, "Cut short. [slow]")

        async def killed():
            ws = await _first_ws_chunk(adapter.ws_url, "Cut short. [slow]")
            fake.popen.kill()
            error = await _next_non_chunk(ws, 10)
            await ws.close()
            return error

        error = asyncio.run(killed())
        fake.popen.wait(10)
        assert error["type"] == "error" and error["id"] == "s" and error["code"] == 502, error
        assert "predictor" in error["message"] and "broke off" in error["message"], error
        # The HTTP stream had sent its headers: it must end as a failed transfer, not a shorter file.
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for _ in http_body:
                pass

        health, health_s = _timed(lambda: requests.get(f"{adapter.url}/health", timeout=30))
        assert health.status_code == 503 and health.json()["status"] == "predictor_unavailable"
        tts, tts_s = _timed(lambda: requests.post(f"{adapter.url}/api/tts", json={"text": "Down?"}, timeout=30))
        assert tts.status_code == 503 and tts.headers.get("Retry-After", "").isdigit(), tts.text
        assert "predictor" in tts.json()["error"]["message"]
        assert health_s < QUICK_S and tts_s < QUICK_S, (health_s, tts_s)

        restarted = time.monotonic()
        fake = start_fake_predictor(voices, logs, port=fake.port)
        while True:
            response = requests.post(f"{adapter.url}/api/tts", json={"text": "Back again."}, timeout=30)
            if response.status_code == 200:
                break
            assert time.monotonic() - restarted < BACK_WITHIN_S, response.text
            time.sleep(0.1)
        back_s = time.monotonic() - restarted
        assert requests.get(f"{adapter.url}/health").status_code == 200
    finally:
        adapter.stop()
        fake.stop()
    print(
        f"kill -9: /health 503 in {health_s:.3f} s, /api/tts 503 in {tts_s:.3f} s, served {back_s:.2f} s after restart"
    )


class _SilentServer:
    """Accepts connections and never answers: a predictor that hangs with its socket open."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_hung_predictor_fails_requests_after_the_documented_timeout(tmp_path):
    """PREDICTOR_TIMEOUT_S is the longest wait for the predictor's next byte (docs/adapter-api.md)."""
    hung = _SilentServer()
    adapter = start_adapter(hung.url, tmp_path, tmp_path, PREDICTOR_TIMEOUT_S="2")
    try:
        tts, tts_s = _timed(lambda: requests.post(f"{adapter.url}/api/tts", json={"text": "Hello?"}, timeout=60))
        assert tts.status_code == 504 and "PREDICTOR_TIMEOUT_S" in tts.json()["error"]["message"], tts.text
        health, health_s = _timed(lambda: requests.get(f"{adapter.url}/health", timeout=60))
        assert health.status_code == 503
    finally:
        adapter.stop()
        hung.close()
    assert 2.0 <= tts_s < 2.0 + 3.0, tts_s
    assert health_s < 5.0 + 3.0, health_s  # the probes' own 5 s timeout
    print(
        f"hung predictor: /api/tts 504 after {tts_s:.2f} s (PREDICTOR_TIMEOUT_S=2), /health 503 after {health_s:.2f} s"
    )


def test_a_stream_stalled_mid_way_fails_after_the_timeout(tmp_path):
    voices, logs = tmp_path / "voices", tmp_path / "logs"
    voices.mkdir()
    logs.mkdir()
    fake = start_fake_predictor(voices, logs)
    adapter = start_adapter(fake.url, voices, logs, PREDICTOR_TIMEOUT_S="2")
    try:
        http_body = _open_http_stream(adapter.url, "Stalls. [slow]")

        async def stalled():
            ws = await _first_ws_chunk(adapter.ws_url, "Stalls. [slow]")
            fake.popen.send_signal(signal.SIGSTOP)  # the process stops; its sockets stay open
            started = time.monotonic()
            error = await _next_non_chunk(ws, 30)
            elapsed = time.monotonic() - started
            await ws.close()
            return error, elapsed

        error, ws_s = asyncio.run(stalled())
        assert error["type"] == "error" and error["code"] == 504, error
        assert "PREDICTOR_TIMEOUT_S" in error["message"]
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for _ in http_body:
                pass
    finally:
        fake.popen.send_signal(signal.SIGCONT)
        adapter.stop()
        fake.stop()
    assert ws_s < 2.0 + 3.0, ws_s
    print(f"stalled stream: WebSocket error 504 after {ws_s:.2f} s (PREDICTOR_TIMEOUT_S=2)")
