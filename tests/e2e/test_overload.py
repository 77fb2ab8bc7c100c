"""Overload (issue 13.1): 30 concurrent HTTP requests plus 30 WebSocket `say`s over 10 connections
against 3 slots. Only 200/done and 429 come back (no 5xx, no connection error), every 429 says why
and carries Retry-After (HTTP), and a normal request is served afterwards. Then the same through the
OpenAI route (30 concurrent calls of the official `openai` SDK: a 429 is its RateLimitError) and
through Wyoming (30 connections of the `wyoming` package's client: audio or an `error` event naming
the busy slots). Once with the sine-wave predictor double (each request holds its slot ~2 s), once
through the real predictor."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests
import websockets
from wyoming.audio import AudioChunk
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.tts import Synthesize

from scripts.processes import free_port
from tests.support.servers import start_adapter, start_fake_predictor, start_turbo_predictor

pytestmark = pytest.mark.slow

SLOTS = 3
HTTP_REQUESTS = 30
WS_CONNECTIONS = 10
SAYS_PER_CONNECTION = 3
OPENAI_REQUESTS = 30
# Wyoming handles one connection's events in order (Home Assistant opens a connection per request),
# so concurrent Wyoming requests come from concurrent connections.
WYOMING_CONNECTIONS = 30
READ_TIMEOUT_S = 600


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


# ---- the OpenAI route -------------------------------------------------------------------------------
def _openai_client(adapter) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{adapter.url}/v1", api_key="unused", max_retries=0, timeout=READ_TIMEOUT_S)


async def _openai_call(client: openai.AsyncOpenAI, text: str, extra_body: dict) -> bytes | openai.RateLimitError:
    """The audio, or the SDK's RateLimitError; any other error (5xx, connection) fails the test."""
    try:
        response = await client.audio.speech.create(
            model="tts-1", voice="alloy", input=text, response_format="wav", extra_body=extra_body
        )
    except openai.RateLimitError as exc:
        return exc
    return response.content


def _openai_burst(adapter, text: str, extra_body: dict) -> list[bytes | openai.RateLimitError]:
    async def run():
        async with _openai_client(adapter) as client:
            return await asyncio.gather(*(_openai_call(client, text, extra_body) for _ in range(OPENAI_REQUESTS)))

    return asyncio.run(run())


def _check_openai(results: list[bytes | openai.RateLimitError], slots_bound: int | None) -> dict:
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    served = [r for r in results if isinstance(r, bytes)]
    for exc in refused:
        assert exc.status_code == 429 and exc.response.headers.get("retry-after", "").isdigit(), exc.response.headers
        assert isinstance(exc.body, dict) and exc.body["type"] == "rate_limit_error", exc.body
        assert "busy" in exc.body["message"] and "MAX_CONCURRENT_REQUESTS" in exc.body["message"], exc.body
    for audio in served:
        assert audio[:4] == b"RIFF" and len(audio) > 44
    assert 1 <= len(served) <= (slots_bound or OPENAI_REQUESTS - 1), (len(served), len(refused))
    return {"openai_200": len(served), "openai_429": len(refused)}


def _openai_served_afterwards(adapter, extra_body: dict) -> None:
    client = openai.OpenAI(base_url=f"{adapter.url}/v1", api_key="unused", max_retries=0, timeout=READ_TIMEOUT_S)
    audio = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Afterwards.", response_format="wav", extra_body=extra_body
    ).read()
    assert audio[:4] == b"RIFF" and len(audio) > 44


# ---- Wyoming ---------------------------------------------------------------------------------------
async def _wyoming_synthesize(port: int, text: str) -> list[Event]:
    """The events answering one synthesize, through audio-stop or an error."""
    async with AsyncTcpClient("127.0.0.1", port, connect_timeout=30, read_timeout=READ_TIMEOUT_S) as client:
        await client.write_event(Synthesize(text=text).event())
        events: list[Event] = []
        while not events or events[-1].type not in ("audio-stop", "error"):
            event = await client.read_event()
            assert event is not None, "the server closed the connection"
            events.append(event)
        return events


def _wyoming_burst(port: int, text: str) -> list[list[Event]]:
    async def run():
        return await asyncio.gather(*(_wyoming_synthesize(port, text) for _ in range(WYOMING_CONNECTIONS)))

    return asyncio.run(run())


def _spoken(events: list[Event]) -> bool:
    types = [e.type for e in events]
    if types[-1] == "error":
        return False
    assert types[0] == "audio-start" and types[-1] == "audio-stop" and set(types[1:-1]) == {"audio-chunk"}, types
    assert sum(len(AudioChunk.from_event(e).audio) for e in events[1:-1]) > 0
    return True


def _check_wyoming(answers: list[list[Event]], slots_bound: int | None) -> dict:
    spoken = 0
    for events in answers:
        if _spoken(events):
            spoken += 1
            continue
        (error,) = events  # refused before any audio
        assert error.data["code"] == "429", error.data
        assert "busy" in error.data["text"] and "MAX_CONCURRENT_REQUESTS" in error.data["text"], error.data
    assert 1 <= spoken <= (slots_bound or WYOMING_CONNECTIONS - 1), spoken
    return {"wyoming_audio": spoken, "wyoming_429": len(answers) - spoken}


def _wyoming_served_afterwards(port: int) -> None:
    assert _spoken(asyncio.run(_wyoming_synthesize(port, "Afterwards.")))


# ---- the stacks ------------------------------------------------------------------------------------
def _adapter_with_wyoming(predictor_url: str, voices_dir, log_dir):
    port = free_port()
    adapter = start_adapter(
        predictor_url, voices_dir, log_dir, MAX_CONCURRENT_REQUESTS=str(SLOTS), WYOMING_PORT=str(port)
    )
    adapter.wyoming_port = port
    adapter.wait_port(port, 30)
    return adapter


@pytest.fixture(scope="module")
def double_stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("overload-double")
    fake = start_fake_predictor(folder, folder)
    adapter = _adapter_with_wyoming(fake.url, folder, folder)
    yield adapter
    adapter.stop()
    fake.stop()


@pytest.fixture(scope="module")
def real_stack(weights_dir, voices_dir, tmp_path_factory):
    # MAX_NEW_TOKENS caps Wyoming's requests too (they carry no parameters).
    predictor = start_turbo_predictor(weights_dir, voices_dir, MAX_CONCURRENT_REQUESTS=str(SLOTS), MAX_NEW_TOKENS="4")
    adapter = _adapter_with_wyoming(predictor.http_url, voices_dir, tmp_path_factory.mktemp("overload-real"))
    yield adapter
    adapter.stop()
    predictor.stop()


# Each request to the double holds its slot for 2 s: a burst (sent within far less) is served 3 at most.
PACED = "Hold the slot. [paced]"
REAL = {"max_new_tokens": 4, "seed": 1}


def test_overload_with_the_predictor_double(double_stack):
    body = {"text": PACED}
    http, ws = _burst(double_stack, body, body)
    counts = _check(http, ws)
    assert counts["http_200"] + counts["ws_done"] <= SLOTS, counts
    _served_afterwards(double_stack, {"text": "Afterwards."})
    print(f"overload (double): {counts}")


def test_overload_through_the_real_predictor(real_stack):
    body = {"text": "Overloaded.", "model": "turbo", "voice": REAL}
    http, ws = _burst(real_stack, body, body)
    counts = _check(http, ws)
    _served_afterwards(real_stack, body)
    print(f"overload (real predictor): {counts}")


def test_openai_overload_with_the_predictor_double(double_stack):
    counts = _check_openai(_openai_burst(double_stack, PACED, {}), slots_bound=SLOTS)
    _openai_served_afterwards(double_stack, {})
    print(f"overload, OpenAI route (double): {counts}")


def test_openai_overload_through_the_real_predictor(real_stack):
    counts = _check_openai(_openai_burst(real_stack, "Overloaded.", REAL), slots_bound=None)
    _openai_served_afterwards(real_stack, REAL)
    print(f"overload, OpenAI route (real predictor): {counts}")


def test_wyoming_overload_with_the_predictor_double(double_stack):
    counts = _check_wyoming(_wyoming_burst(double_stack.wyoming_port, PACED), slots_bound=SLOTS)
    _wyoming_served_afterwards(double_stack.wyoming_port)
    print(f"overload, Wyoming (double): {counts}")


def test_wyoming_overload_through_the_real_predictor(real_stack):
    counts = _check_wyoming(_wyoming_burst(real_stack.wyoming_port, "Overloaded."), slots_bound=None)
    _wyoming_served_afterwards(real_stack.wyoming_port)
    print(f"overload, Wyoming (real predictor): {counts}")
