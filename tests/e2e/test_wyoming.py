"""Wyoming (Home Assistant) through the real path: the `wyoming` package's own client against the
adapter's Wyoming server, in front of the real predictor (random weights). The exchanges are recorded
to build/test-artifacts/wyoming-transcript.txt."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import requests
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from adapter.wyoming.handler import CHUNK_MS
from contract.variants import LANGUAGES
from scripts.processes import ROOT

pytestmark = pytest.mark.slow
ARTIFACTS = ROOT / "build" / "test-artifacts"
SAMPLES_PER_TOKEN = 960  # 24 kHz, 25 speech tokens per second
CHUNK_BYTES = 24000 * CHUNK_MS // 1000 * 2
READ_TIMEOUT_S = 300


class Transcript:
    """Every event of the exchanges, in order, with its direction and time (audio payloads by size)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._start = time.monotonic()

    def add(self, direction: str, event: Event) -> None:
        payload = f" + {len(event.payload)} bytes of audio" if event.payload else ""
        data = json.dumps(event.data, sort_keys=True)
        if event.type == "info":  # the voice list is long: its size and first entries tell the story
            voices = event.data["tts"][0]["voices"]
            shown = {**event.data["tts"][0], "voices": [*voices[:3], f"... {len(voices)} voices in all"]}
            data = json.dumps({"tts": [shown]}, sort_keys=True)
        self.lines.append(f"{time.monotonic() - self._start:8.3f}s {direction} {event.type} {data}{payload}")

    def section(self, title: str) -> None:
        self.lines.append(f"# {title}")
        self._start = time.monotonic()


class Client:
    def __init__(self, port: int, transcript: Transcript):
        self.client = AsyncTcpClient("127.0.0.1", port, connect_timeout=10, read_timeout=READ_TIMEOUT_S)
        self.transcript = transcript

    async def __aenter__(self) -> Client:
        await self.client.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.disconnect()

    async def send(self, event: Event) -> None:
        self.transcript.add("->", event)
        await self.client.write_event(event)

    async def receive(self) -> Event:
        event = await self.client.read_event()
        assert event is not None, "the server closed the connection"
        self.transcript.add("<-", event)
        return event

    async def until(self, last_type: str) -> list[Event]:
        events = []
        while not events or events[-1].type not in (last_type, "error"):
            events.append(await self.receive())
        return events


@pytest.fixture(scope="module")
def module_transcript() -> Transcript:
    return Transcript()


@pytest.fixture
def transcript(module_transcript, capsys):
    """The module's transcript, saved (all exchanges so far) after each test, its path printed."""
    yield module_transcript
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "wyoming-transcript.txt"
    path.write_text("\n".join(module_transcript.lines) + "\n")
    with capsys.disabled():
        print(f"\nWyoming transcript: {path}")


@pytest.fixture(scope="module")
def wyoming(real_adapter):
    return real_adapter


def run(coroutine):
    return asyncio.run(coroutine)


def audio_of(events: list[Event]) -> bytes:
    return b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")


def check_audio_events(events: list[Event]) -> bytes:
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types.count("audio-start") == 1, types
    assert set(types[1:-1]) == {"audio-chunk"}, types
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    chunks = [AudioChunk.from_event(e) for e in events if e.type == "audio-chunk"]
    # Home Assistant plays each chunk whole before the next: they are short, all but the last exactly CHUNK_MS.
    assert all(len(c.audio) == CHUNK_BYTES for c in chunks[:-1]) and 0 < len(chunks[-1].audio) <= CHUNK_BYTES
    audio = audio_of(events)
    assert len(audio) % (2 * SAMPLES_PER_TOKEN) == 0 and audio.strip(b"\0"), "whole speech tokens of real audio"
    return audio


def test_describe_lists_library_voices_for_the_loaded_models_languages(wyoming, transcript):
    transcript.section("describe")

    async def exchange():
        async with Client(wyoming.wyoming_port, transcript) as client:
            await client.send(Describe().event())
            return Info.from_event(await client.receive())

    info = run(exchange())
    (program,) = info.tts
    assert program.supports_synthesize_streaming and program.installed
    voices = {v.name: v for v in program.voices}
    library = {v["name"] for v in requests.get(f"{wyoming.url}/api/voices").json()["voices"]}
    # The session's voice folder (other tests may have added voices to it before this one runs).
    assert {"alice.wav", "bob.wav", "short.wav"} <= library
    for name in ("standard/en", "standard/en/alice.wav", "standard/en/short.wav", "turbo/en/bob.wav"):
        assert voices[name].languages == ["en"], name
    assert "turbo/en/short.wav" not in voices  # turbo needs a reference longer than 5 s
    languages = {language for v in program.voices for language in v.languages}
    loaded = requests.get(f"{wyoming.url}/health").json()["loaded_models"]
    if "multilingual" in loaded:  # the suite's predictor loads all three
        assert languages == set(LANGUAGES) and len(languages) == 23
        assert voices["multilingual/de/alice.wav"].description == "alice (multilingual, de)"
    else:
        assert languages == {"en"}


def test_synthesize_answers_small_audio_chunks(wyoming, transcript):
    transcript.section("synthesize")

    async def exchange():
        async with Client(wyoming.wyoming_port, transcript) as client:
            voice = SynthesizeVoice(name="turbo/en/alice.wav")
            await client.send(Synthesize(text="Hello from Home Assistant.", voice=voice).event())
            return await client.until("audio-stop")

    events = run(exchange())
    assert events[-1].type == "audio-stop", events[-1]
    check_audio_events(events[:-1])


def test_streaming_synthesis_speaks_each_sentence_as_it_completes(wyoming, transcript):
    """Home Assistant's order: synthesize-start, text chunks, the whole text again (for servers that do not
    stream, to be ignored), synthesize-stop. The first sentence's audio arrives before the text is finished."""
    transcript.section("streaming synthesis")
    parts = ["The first sen", "tence is here. The sec", "ond one follows"]

    async def exchange():
        async with Client(wyoming.wyoming_port, transcript) as client:
            await client.send(SynthesizeStart(voice=SynthesizeVoice(name="standard/en/bob.wav")).event())
            await client.send(SynthesizeChunk(text=parts[0]).event())
            await client.send(SynthesizeChunk(text=parts[1]).event())
            before_stop = [await client.receive()]
            while before_stop[-1].type != "audio-chunk":
                before_stop.append(await client.receive())
            await client.send(SynthesizeChunk(text=parts[2]).event())
            await client.send(Synthesize(text="".join(parts)).event())
            await client.send(SynthesizeStop().event())
            return before_stop + await client.until("synthesize-stopped")

    events = run(exchange())
    types = [e.type for e in events]
    assert types[-2:] == ["audio-stop", "synthesize-stopped"], types
    audio = check_audio_events(events[:-2])
    # Two sentences, each capped at the predictor's MAX_NEW_TOKENS (40): more than one sentence's worth
    # proves the repeated whole text was not spoken and the second sentence was.
    assert len(audio) > 40 * SAMPLES_PER_TOKEN * 2 or types.count("audio-chunk") > 1


def test_errors_are_wyoming_error_events_and_the_connection_keeps_serving(wyoming, transcript):
    transcript.section("errors")

    async def exchange():
        async with Client(wyoming.wyoming_port, transcript) as client:
            await client.send(Synthesize(text="Hi.", voice=SynthesizeVoice(name="standard/en/nobody.wav")).event())
            missing = await client.receive()
            await client.send(Synthesize(text="Hi.", voice=SynthesizeVoice(name="turbo/de/alice.wav")).event())
            wrong_language = await client.receive()
            await client.send(Synthesize(text="Hi.", voice=SynthesizeVoice(language="xx")).event())
            unknown_language = await client.receive()
            await client.send(Synthesize(text="   ").event())
            empty = await client.receive()
            await client.send(Describe().event())
            return missing, wrong_language, unknown_language, empty, await client.receive()

    missing, wrong_language, unknown_language, empty, info = run(exchange())
    assert (missing.type, missing.data["code"]) == ("error", "404") and "nobody.wav" in missing.data["text"]
    assert (wrong_language.type, wrong_language.data["code"]) == ("error", "400")
    assert (unknown_language.type, unknown_language.data["code"]) == ("error", "400")
    assert (empty.type, empty.data["code"]) == ("error", "422")
    assert info.type == "info"
