"""Overload (issue 13.1): 30 concurrent HTTP requests plus 30 WebSocket `say`s over 10 connections
against 3 slots. Only 200/done and 429 come back (no 5xx, no connection error), every 429 says why
and carries Retry-After (HTTP), and a normal request is served afterwards. Once with the sine-wave
predictor double (each request holds its slot ~2 s), once through the real predictor."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import websockets

from tests.support.servers import start_adapter, start_fake_predictor, start_turbo_predictor

pytestmark = pytest.mark.slow

SLOTS = 3
HTTP_REQUESTS = 30
WS_CONNECTIONS = 10
SAYS_PER_CONNECTION = 3


def _http(url: str, body: dict) -> tuple[int, dict, bytes]:
    response = requests.post(f"{url}/api/tts", json=body, timeout=600)
    return response.status_code, dict(response.headers), response.content


async def _ws_connection(ws_url: str, body: dict, connection: int) -> list[dict]:
    """Every say's final message (done or error) on one connection."""
    async with websockets.connect(ws_url, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        ids = [f"c{connection}-{n}" for n in range(SAYS_PER_CONNECTION)]
        for request_id in ids:
            await ws.send(json.dumps({"type": "say", "id": request_id, **body}))
        finals: dict[str, dict] = {}
        while len(finals) < len(ids):
            message = json.loads(await asyncio.wait_for(ws.recv(), 600))
            if message["type"] in ("done", "error"):
                finals[message["id"]] = message
        return list(finals.values())


def _burst(adapter, http_body: dict, ws_body: dict) -> tuple[list, list]:
    async def run():
        with ThreadPoolExecutor(HTTP_REQUESTS) as pool:
            loop = asyncio.get_running_loop()
            http = [loop.run_in_executor(pool, _http, adapter.url, http_body) for _ in range(HTTP_REQUESTS)]
            ws = [_ws_connection(adapter.ws_url, ws_body, c) for c in range(WS_CONNECTIONS)]
            results = await asyncio.gather(*http, *ws)
        return results[:HTTP_REQUESTS], [m for finals in results[HTTP_REQUESTS:] for m in finals]

    return asyncio.run(run())


def _check(http: list, ws: list) -> dict:
    statuses = [status for status, _, _ in http]
    assert set(statuses) <= {200, 429}, statuses
    for status, headers, content in http:
        if status == 429:
            assert headers.get("retry-after", "").isdigit(), headers
            assert "busy" in json.loads(content)["error"]["message"]
        else:
            assert headers["content-type"].startswith("audio/") and len(content) > 44
    for message in ws:
        if message["type"] == "error":
            assert message["code"] == 429 and "busy" in message["message"], message
    served = statuses.count(200) + sum(m["type"] == "done" for m in ws)
    assert 1 <= served <= HTTP_REQUESTS + len(ws) - 1
    return {"http_200": statuses.count(200), "http_429": statuses.count(429), "ws_done": served - statuses.count(200)}


def _served_afterwards(adapter, body: dict) -> None:
    status, _, content = _http(adapter.url, body)
    assert status == 200 and len(content) > 44


def test_overload_with_the_predictor_double(tmp_path):
    fake = start_fake_predictor(tmp_path, tmp_path)
    adapter = start_adapter(fake.url, tmp_path, tmp_path, MAX_CONCURRENT_REQUESTS=str(SLOTS))
    try:
        body = {"text": "Hold the slot. [paced]"}
        http, ws = _burst(adapter, body, body)
        counts = _check(http, ws)
        # Each request holds its slot for 2 s: the burst (sent within far less) fits 3 at most.
        assert counts["http_200"] + counts["ws_done"] <= SLOTS, counts
        _served_afterwards(adapter, {"text": "Afterwards."})
    finally:
        adapter.stop()
        fake.stop()
    print(f"overload (double): {counts}")


def test_overload_through_the_real_predictor(weights_dir, voices_dir, tmp_path):
    predictor = start_turbo_predictor(
        weights_dir,
        voices_dir,
        MAX_CONCURRENT_REQUESTS=str(SLOTS),
    )
    adapter = start_adapter(predictor.http_url, voices_dir, tmp_path, MAX_CONCURRENT_REQUESTS=str(SLOTS))
    try:
        body = {"text": "Overloaded.", "model": "turbo", "voice": {"max_new_tokens": 4, "seed": 1}}
        http, ws = _burst(adapter, body, body)
        counts = _check(http, ws)
        _served_afterwards(adapter, body)
    finally:
        adapter.stop()
        predictor.stop()
    print(f"overload (real predictor): {counts}")
