"""Fail fast on a frozen predictor (issue 23.1), with the real turbo predictor (random weights) behind the
real adapter: the predictor is frozen with SIGSTOP while a WebSocket stream is in flight. Once the
adapter has seen it, a new request on every transport (HTTP, OpenAI, WebSocket, Wyoming) is answered
at once with a 503 (Retry-After on HTTP) that says the predictor is not answering; the stream in flight
keeps waiting and ends with `done` after SIGCONT, and new requests are served again."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import openai
import pytest
import requests
import websockets
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.tts import Synthesize

from scripts.processes import free_port
from tests.support.servers import start_adapter, start_turbo_predictor

pytestmark = pytest.mark.slow

# Every transport's refusal, once the freeze is known (issue: "answered in at most 2 s").
ANSWER_WITHIN_S = 2.0
# The watch sees a freeze within its interval + its probe timeout (adapter/breaker.py), plus a busy machine.
SEEN_WITHIN_S = 5.0
# After SIGCONT: the breaker closes within a probe, then a request is served (a few tokens on a busy CPU).
SERVED_AGAIN_WITHIN_S = 60.0
FROZEN_S = 6.0
NOT_ANSWERING = "not answering"
TURBO = {"model": "turbo", "voice": {"max_new_tokens": 4, "seed": 1}}


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def _wait_for(predicate, within_s: float) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < within_s, f"not within {within_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def _health_status(url: str) -> int:
    try:
        return requests.get(f"{url}/health", timeout=10).status_code
    except requests.RequestException:
        return 0


async def _wyoming_refusal(port: int) -> Error:
    client = AsyncTcpClient("127.0.0.1", port, connect_timeout=5, read_timeout=10)
    await client.connect()
    try:
        await client.write_event(Synthesize(text="Frozen?").event())
        while True:
            event = await client.read_event()
            assert event is not None, "the Wyoming server closed the connection"
            if Error.is_type(event.type):
                return Error.from_event(event)
    finally:
        await client.disconnect()


async def _new_ws_connection(url: str) -> tuple[dict, int | None]:
    async with websockets.connect(url) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    return first, closed.value.rcvd.code if closed.value.rcvd else None


def test_a_frozen_predictor_is_refused_at_once_on_every_transport_and_served_after_sigcont(
    weights_dir, voices_dir, tmp_path
):
    predictor = start_turbo_predictor(weights_dir, voices_dir, MAX_NEW_TOKENS="40", OMP_NUM_THREADS="1")
    wyoming_port = free_port()
    adapter = start_adapter(predictor.http_url, voices_dir, tmp_path, WYOMING_PORT=str(wyoming_port))
    sdk = openai.OpenAI(base_url=f"{adapter.url}/v1", api_key="unused", max_retries=0, timeout=30)
    timings: dict[str, float] = {}
    try:
        warm = requests.post(f"{adapter.url}/api/tts", json={"text": "Warm up.", **TURBO}, timeout=600)
        assert warm.status_code == 200, warm.text

        async def scenario():
            async with websockets.connect(adapter.ws_url, max_size=None) as ws:
                assert json.loads(await ws.recv())["type"] == "ready"
                # Three pieces of up to 12 tokens: still streaming when the predictor freezes.
                say = {"type": "say", "id": "inflight", "text": "One piece. Two pieces. Three pieces.", **TURBO}
                say["voice"] = {**TURBO["voice"], "max_new_tokens": 12}
                await ws.send(json.dumps(say))
                first = json.loads(await asyncio.wait_for(ws.recv(), 600))
                assert first["type"] == "chunk", first
                predictor.popen.send_signal(signal.SIGSTOP)
                frozen = time.monotonic()
                timings["seen"] = await asyncio.to_thread(
                    _wait_for, lambda: _health_status(adapter.url) == 503, SEEN_WITHIN_S
                )

                # Each transport, timed from its request to its refusal.
                response, timings["http"] = await asyncio.to_thread(
                    _timed, lambda: requests.post(f"{adapter.url}/api/tts", json={"text": "New.", **TURBO}, timeout=30)
                )
                assert response.status_code == 503, response.text
                assert response.headers.get("Retry-After", "").isdigit()
                assert NOT_ANSWERING in response.json()["error"]["message"]

                def openai_call():
                    with pytest.raises(openai.APIStatusError) as refused:
                        sdk.audio.speech.create(model="tts-1", voice="alloy", input="New.")
                    return refused.value

                refused, timings["openai"] = await asyncio.to_thread(_timed, openai_call)
                assert refused.status_code == 503 and NOT_ANSWERING in refused.message, refused
                assert refused.response.headers.get("Retry-After", "").isdigit()

                started = time.monotonic()
                error, close_code = await _new_ws_connection(adapter.ws_url)
                timings["ws-connect"] = time.monotonic() - started
                assert error["type"] == "error" and error["code"] == 503 and NOT_ANSWERING in error["message"]
                assert close_code == 1013

                # A new request on the connection that streams: refused, while its stream waits on.
                started = time.monotonic()
                await ws.send(json.dumps({"type": "say", "id": "new", "text": "New.", **TURBO}))
                messages = []
                while not any(m.get("id") == "new" for m in messages):
                    messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
                timings["ws-say"] = time.monotonic() - started
                refusal = next(m for m in messages if m.get("id") == "new")
                assert refusal["type"] == "error" and refusal["code"] == 503 and NOT_ANSWERING in refusal["message"]

                started = time.monotonic()
                wyoming_error = await _wyoming_refusal(wyoming_port)
                timings["wyoming"] = time.monotonic() - started
                assert wyoming_error.code == "503" and NOT_ANSWERING in wyoming_error.text, wyoming_error

                await asyncio.sleep(max(0.0, FROZEN_S - (time.monotonic() - frozen)))
                predictor.popen.send_signal(signal.SIGCONT)
                resumed = time.monotonic()
                # The stream in flight was never cut: it ends with its done.
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 600))
                    if message.get("id") == "inflight" and message["type"] != "chunk":
                        break
                assert message["type"] == "done", message
                return resumed

        resumed = asyncio.run(scenario())

        def served() -> bool:
            answer = requests.post(f"{adapter.url}/api/tts", json={"text": "Back.", **TURBO}, timeout=600)
            assert answer.status_code in (200, 503), answer.text
            return answer.status_code == 200

        _wait_for(served, SERVED_AGAIN_WITHIN_S)
        timings["served-again"] = time.monotonic() - resumed
    finally:
        predictor.popen.send_signal(signal.SIGCONT)
        sdk.close()
        adapter.stop()
        predictor.stop()
    print("frozen predictor, seconds: " + ", ".join(f"{name} {value:.3f}" for name, value in timings.items()))
    assert timings["seen"] < SEEN_WITHIN_S
    for transport in ("http", "openai", "ws-connect", "ws-say", "wyoming"):
        assert timings[transport] < ANSWER_WITHIN_S, (transport, timings)
