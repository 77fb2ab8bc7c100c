"""The breaker on the predictor (adapter/breaker.py) and a started stream's own bounds, through the real
PredictorClient over httpx's mock transport: refused at once while the predictor does not answer,
closed as soon as it answers, streams in flight left to their FIRST_CHUNK/CHUNK_GAP bounds."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import numpy as np
import pytest

from adapter.breaker import OPEN_WATCH_INTERVAL_S
from adapter.predictor_client import PredictorClient, PredictorUnavailable, StreamBounds
from contract.errors import ServiceError


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _chunk(final: bool = False) -> bytes:
    data = base64.b64encode(np.zeros(240, dtype="<f4").tobytes()).decode()
    return _event({"type": "chunk", "index": 0, "sample_rate": 24000, "audio_b64": data, "final": final})


DONE = _event({"type": "done", "chunks": 1, "duration_seconds": 0.01, "speech_tokens": 1})


class Predictor:
    """A mock predictor whose behaviour the test switches: answering, refusing connections, or
    streaming a scripted body (bytes, or a float for a pause in seconds)."""

    def __init__(self):
        self.down = False
        self.body: list[bytes | float] = [_chunk(final=True), DONE]
        self.calls: list[str] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.url.path)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path.endswith("generate_stream"):
            script = list(self.body)

            async def body():
                for piece in script:
                    if isinstance(piece, float):
                        await asyncio.sleep(piece)
                    else:
                        yield piece

            return httpx.Response(200, content=body(), headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={"ready": True, "loaded_models": ["turbo"]})


def _client(predictor: Predictor, bounds: StreamBounds | None = None) -> PredictorClient:
    return PredictorClient("http://predictor", 30, transport=httpx.MockTransport(predictor.handle), bounds=bounds)


async def _speak(client: PredictorClient) -> int:
    stream = await client.open_stream("turbo", "hi", {})
    return len([chunk async for chunk in stream])


def test_a_call_without_answer_opens_the_breaker_and_an_answer_closes_it():
    async def scenario():
        predictor = Predictor()
        client = _client(predictor)
        try:
            assert await _speak(client) == 1
            predictor.down = True
            with pytest.raises(PredictorUnavailable) as first:
                await client.open_stream("turbo", "hi", {})
            calls = len(predictor.calls)
            started = time.monotonic()
            with pytest.raises(PredictorUnavailable) as refused:
                await client.open_stream("turbo", "hi", {})
            refused_s = time.monotonic() - started
            # Refused by the breaker, without a call: the message names what it saw.
            assert predictor.calls[calls:] in ([], ["/v2/health/ready"]), predictor.calls[calls:]
            assert "not answering" in refused.value.message and "unreachable: ConnectError" in refused.value.message
            with pytest.raises(PredictorUnavailable):
                await client.info()
            assert await client.ready() is False
            predictor.down = False
            back = time.monotonic()
            while client.breaker.is_open:
                assert time.monotonic() - back < 5 * OPEN_WATCH_INTERVAL_S, "the watch did not close the breaker"
                await asyncio.sleep(0.01)
            closed_s = time.monotonic() - back
            assert await _speak(client) == 1
            return first.value, refused_s, closed_s
        finally:
            await client.aclose()

    first, refused_s, closed_s = asyncio.run(scenario())
    assert first.status == 503 and "unreachable" in first.message
    assert refused_s < 0.05 and closed_s <= 2 * OPEN_WATCH_INTERVAL_S


def test_an_open_breaker_does_not_cut_a_stream_already_started():
    async def scenario():
        predictor = Predictor()
        predictor.body = [_chunk(), 0.3, _chunk(final=True), DONE]
        client = _client(predictor)
        try:
            stream = await client.open_stream("turbo", "hi", {})
            got = []
            async for chunk in stream:
                got.append(chunk.final)
                if len(got) == 1:
                    client.breaker.failed("a test says so")
                    with pytest.raises(PredictorUnavailable):
                        await client.open_stream("turbo", "new", {})
            return got, stream.done
        finally:
            await client.aclose()

    got, done = asyncio.run(scenario())
    assert got == [False, True] and done is not None


def test_a_health_check_in_progress_is_answered_when_the_breaker_opens():
    """/health, a WebSocket's connect and Wyoming ask the predictor's info: once the predictor is known
    not to answer, they must not each wait for their own 5 s timeout."""

    async def scenario():
        predictor = Predictor()
        slow = predictor.handle

        async def hanging(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith(("/info", "/ready")):  # frozen: not even the watch's probe is answered
                await asyncio.sleep(10)
            return await slow(request)

        client = PredictorClient("http://predictor", 30, transport=httpx.MockTransport(hanging))
        try:
            asyncio.get_running_loop().call_later(0.2, client.breaker.failed, "a test says so")
            started = time.monotonic()
            with pytest.raises(PredictorUnavailable) as refused:
                await client.info()
            return refused.value, time.monotonic() - started
        finally:
            await client.aclose()

    refused, seconds = asyncio.run(scenario())
    assert 0.2 <= seconds < 0.5 and "a test says so" in refused.message, (seconds, refused.message)


@pytest.mark.parametrize(
    "body, setting",
    [([5.0, _chunk(final=True), DONE], "FIRST_CHUNK_TIMEOUT_S"), ([_chunk(), 5.0, DONE], "CHUNK_GAP_TIMEOUT_S")],
    ids=["before-the-first-chunk", "between-chunks"],
)
def test_a_silent_stream_ends_with_a_504_naming_its_bound(body, setting):
    async def scenario():
        predictor = Predictor()
        predictor.body = body
        client = _client(predictor, StreamBounds(first_chunk_s=0.4, chunk_gap_s=0.4))
        started = time.monotonic()
        try:
            with pytest.raises(ServiceError) as failed:
                await _speak(client)
            return failed.value, time.monotonic() - started, client.breaker.is_open
        finally:
            await client.aclose()

    error, seconds, opened = asyncio.run(scenario())
    assert error.status == 504 and setting in error.message and "0.4 s" in error.message, error.message
    assert 0.4 <= seconds < 0.4 + 1.0, seconds
    assert opened  # a silent stream is the predictor not answering: new requests are refused meanwhile


def test_the_bounds_are_settings_with_documented_defaults():
    from adapter.settings import Settings

    settings = Settings.from_env({"FIRST_CHUNK_TIMEOUT_S": "7.5", "CHUNK_GAP_TIMEOUT_S": "2"})
    assert (settings.first_chunk_timeout_s, settings.chunk_gap_timeout_s) == (7.5, 2.0)
    defaults = Settings.from_env({})
    assert (defaults.first_chunk_timeout_s, defaults.chunk_gap_timeout_s) == (120.0, 60.0)
