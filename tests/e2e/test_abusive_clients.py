"""Slow and abusive clients (issue 13.5), against the real adapter process: a client that stops
reading is dropped after CLIENT_SEND_TIMEOUT_S (its slot freed, what is buffered for it capped by
flow control) while others are served, and oversized input is refused at once without a 5xx. The
predictor is the sine-wave double: these are the adapter's own limits."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time

import psutil
import pytest
import requests
import websockets

from tests.support.servers import start_adapter, start_fake_predictor

pytestmark = pytest.mark.slow

SEND_TIMEOUT_S = 3
# Filling the socket buffers (a few MB on loopback) comes first, then the timeout; room for a busy machine.
DROPPED_WITHIN_S = 30.0
RSS_GROWTH_BOUND = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    server = start_fake_predictor(tmp_path_factory.mktemp("voices"), tmp_path_factory.mktemp("logs"))
    yield server
    server.stop()


@pytest.fixture
def adapter(fake, tmp_path):
    server = start_adapter(
        fake.url, tmp_path, tmp_path, MAX_CONCURRENT_REQUESTS="2", CLIENT_SEND_TIMEOUT_S=str(SEND_TIMEOUT_S)
    )
    yield server
    server.stop()


def _in_flight(adapter) -> float:
    text = requests.get(f"{adapter.url}/metrics", timeout=10).text
    return float(re.search(r"^adapter_synthesis_in_flight (\S+)$", text, re.M).group(1))


def _wait_slots_free(adapter, timeout: float) -> float:
    started = time.monotonic()
    while _in_flight(adapter) > 0:
        assert time.monotonic() - started < timeout, "the slow client still holds its slot"
        time.sleep(0.2)
    return time.monotonic() - started


def _small_window_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    return sock


def _served_meanwhile(adapter) -> None:
    assert requests.get(f"{adapter.url}/api/voices", timeout=60).status_code == 200
    response = requests.post(f"{adapter.url}/api/tts", json={"text": "Meanwhile."}, timeout=60)
    assert response.status_code == 200 and len(response.content) > 44


def test_an_http_client_that_stops_reading_is_dropped_and_frees_its_slot(adapter):
    rss_before = psutil.Process(adapter.popen.pid).memory_info().rss
    sock = _small_window_socket(adapter.port)
    body = json.dumps({"text": "A lot of audio. [flood]", "audio": {"format": "pcm", "stream": True}}).encode()
    sock.sendall(
        b"POST /api/tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    try:
        time.sleep(0.5)
        assert _in_flight(adapter) == 1
        _served_meanwhile(adapter)
        freed_s = _wait_slots_free(adapter, DROPPED_WITHIN_S)
        rss_growth = psutil.Process(adapter.popen.pid).memory_info().rss - rss_before
        _served_meanwhile(adapter)
        # When it reads at last, its transfer is incomplete: the chunked body never ends.
        sock.settimeout(10)
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
        assert received.startswith(b"HTTP/1.1 200") and not received.endswith(b"0\r\n\r\n")
        assert len(received) < 300 * 24000 * 2  # far less than the whole 300 s of audio
    finally:
        sock.close()
    assert rss_growth < RSS_GROWTH_BOUND, rss_growth
    print(f"unread HTTP stream: slot freed {freed_s:.1f} s after it was served; adapter RSS +{rss_growth >> 20} MiB")


def test_a_websocket_client_that_never_reads_is_dropped_with_1008(adapter):
    rss_before = psutil.Process(adapter.popen.pid).memory_info().rss

    async def scenario():
        # websockets stops reading the socket once 16 messages wait unread (max_queue).
        ws = await websockets.connect(
            adapter.ws_url, sock=_small_window_socket(adapter.port), max_queue=4, ping_interval=None
        )
        await ws.send(json.dumps({"type": "say", "id": "f", "text": "A lot of audio. [flood]"}))
        await asyncio.sleep(0.5)
        assert await asyncio.to_thread(_in_flight, adapter) == 1
        await asyncio.to_thread(_served_meanwhile, adapter)
        freed = await asyncio.to_thread(_wait_slots_free, adapter, DROPPED_WITHIN_S)
        growth = psutil.Process(adapter.popen.pid).memory_info().rss - rss_before
        await asyncio.to_thread(_served_meanwhile, adapter)
        received = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        return freed, growth, closed.value, received

    freed_s, rss_growth, closed, messages = asyncio.run(scenario())
    assert closed.rcvd is not None and closed.rcvd.code == 1008, closed
    assert "CLIENT_SEND_TIMEOUT_S" in closed.rcvd.reason
    assert messages[0]["type"] == "ready"
    chunks = messages[1:]  # cut short: never a last chunk, never done
    assert chunks and all(m["type"] == "chunk" and not m["is_last"] for m in chunks), chunks[-1:]
    received = len(messages)
    assert rss_growth < RSS_GROWTH_BOUND, rss_growth
    print(
        f"unread WebSocket: slot freed after {freed_s:.1f} s, closed 1008 after {received} messages; RSS +{rss_growth >> 20} MiB"
    )


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_websocket_frame_over_the_limit_closes_1009(adapter):
    async def scenario():
        async with websockets.connect(adapter.ws_url) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            started = time.monotonic()
            await ws.send(json.dumps({"type": "say", "text": "x" * (2 * 1024 * 1024)}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            return closed.value.rcvd.code, time.monotonic() - started

    code, took = asyncio.run(scenario())
    assert code == 1009 and took < 2.0, (code, took)
    _served_meanwhile(adapter)


def test_a_multipart_body_with_thousands_of_fields_is_refused(adapter):
    fields = {f"field{i}": "x" for i in range(5000)}
    response, took = _timed(
        lambda: requests.post(f"{adapter.url}/api/voices/upload", files={"file": ("a.wav", b"RIFF")}, data=fields)
    )
    assert response.status_code == 400 and "fields" in response.json()["error"]["message"], response.text
    assert took < 2.0, took
    _served_meanwhile(adapter)


def test_100_kb_of_headers_are_refused(adapter):
    headers = {f"X-Pad-{i}": "y" * 1000 for i in range(100)}
    response, took = _timed(lambda: requests.get(f"{adapter.url}/api/voices", headers=headers, timeout=10))
    assert response.status_code in (400, 431), response.status_code
    assert took < 2.0, took
    _served_meanwhile(adapter)
