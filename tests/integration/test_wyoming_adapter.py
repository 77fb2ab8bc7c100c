"""The adapter's Wyoming server in front of the predictor's test double, for what needs the double's
controls: admission shared with the HTTP API, cancellation when Home Assistant hangs up, and `describe`
while the predictor is down. (The real path is tests/e2e/test_wyoming.py.)"""

from __future__ import annotations

import asyncio
import threading

import pytest
import requests
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize

from scripts.processes import free_port
from tests.support.servers import start_adapter


@pytest.fixture
def wyoming_adapter(adapter_factory, adapter_voices_dir):
    def start(**env: str):
        port = free_port()
        server = adapter_factory(adapter_voices_dir, WYOMING_PORT=str(port), **env)
        server.wyoming_port = port
        return server

    return start


async def first_event(port: int, *events):
    async with AsyncTcpClient("127.0.0.1", port, connect_timeout=10, read_timeout=30) as client:
        for event in events:
            await client.write_event(event)
        return await client.read_event()


def test_wyoming_and_http_share_one_pool_of_slots(wyoming_adapter, fake_predictor):
    adapter = wyoming_adapter(MAX_CONCURRENT_REQUESTS="1")
    body = {"text": "Hold the slot [slow]", "audio": {"format": "pcm", "stream": True}}
    with requests.post(f"{adapter.url}/api/tts", json=body, stream=True, timeout=30) as held:
        assert held.status_code == 200
        audio = held.iter_content(256)  # kept: a dropped iterator closes the connection, which frees the slot
        next(audio)
        refused = asyncio.run(first_event(adapter.wyoming_port, Synthesize(text="Am I admitted?").event()))
    assert refused.type == "error" and refused.data["code"] == "429"
    assert "MAX_CONCURRENT_REQUESTS" in refused.data["text"]
    # The other way round: a Wyoming synthesis holds the slot and HTTP is refused.
    fake_predictor.wait_idle()
    started = threading.Event()

    async def speak_slowly():
        async with AsyncTcpClient("127.0.0.1", adapter.wyoming_port, read_timeout=30) as client:
            await client.write_event(Synthesize(text="Taking the slot [slow]").event())
            assert (await client.read_event()).type == "audio-start"
            started.set()
            await asyncio.to_thread(done.wait, 30)

    done = threading.Event()
    thread = threading.Thread(target=asyncio.run, args=(speak_slowly(),))
    thread.start()
    try:
        assert started.wait(30)
        busy = requests.post(f"{adapter.url}/api/tts", json={"text": "Me too?"}, timeout=30)
        assert busy.status_code == 429 and busy.headers["Retry-After"]
    finally:
        done.set()
        thread.join(30)


def test_hanging_up_cancels_the_generation_and_frees_the_slot(wyoming_adapter, fake_predictor):
    adapter = wyoming_adapter(MAX_CONCURRENT_REQUESTS="1")
    fake_predictor.wait_idle()
    start = asyncio.run(first_event(adapter.wyoming_port, Synthesize(text="Hang up on me [slow]").event()))
    assert start.type == "audio-start"  # then the client is gone, 20 s of audio early
    assert fake_predictor.wait_idle(timeout=10)["active"] == 0
    after = requests.post(f"{adapter.url}/api/tts", json={"text": "Free again?"}, timeout=30)
    assert after.status_code == 200
    metrics = requests.get(f"{adapter.url}/metrics").text
    assert 'adapter_synthesis_total{model="standard",outcome="cancelled",transport="wyoming"} 1.0' in metrics


def test_describe_while_the_predictor_is_down_still_lists_nothing_but_answers(adapter_voices_dir, adapter_log_dir):
    port = free_port()
    adapter = start_adapter(
        f"http://127.0.0.1:{free_port()}", adapter_voices_dir, adapter_log_dir, WYOMING_PORT=str(port)
    )
    try:
        info = asyncio.run(first_event(port, Describe().event()))
        assert Info.from_event(info).tts[0].voices == []
        error = asyncio.run(first_event(port, Synthesize(text="Anyone there?").event()))
        assert error.type == "error" and error.data["code"] == "503"
    finally:
        adapter.stop()
