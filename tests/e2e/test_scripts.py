"""Scripts through the real path (the adapter process in front of the real predictor, random weights):
a three-segment dialogue (two voices and a pause) on every transport, as `segments` (seed HTTP and
WebSocket) and as SSML (the official `openai` SDK, the `wyoming` client, the seed's text), with each
segment's place in the audio; the 4xx that names the segment at fault; hostile SSML refused; turbo's
tags, read from the (random-weight) turbo tokenizer, spoken on every transport, and the 400s for a tag
its tokenizer does not know, or for any tag on a model whose tokenizer has none."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re

import numpy as np
import openai
import pytest
import requests
import soundfile as sf
import websockets
from wyoming.audio import AudioChunk
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from contract.variants import SAMPLE_RATE
from scripts.random_weights import TURBO_TAGS
from tests.support.sse import sse_events
from tests.unit.test_ssml import BILLION_LAUGHS, EXTERNAL_ENTITY

pytestmark = pytest.mark.slow

PAUSE_MS = 400
# Short generations (random weights speak noise until max_new_tokens): 8 tokens = 0.32 s each.
SHORT = {"seed": 5, "max_new_tokens": 8}
DIALOGUE = [
    {"text": "Did you hear that?", "voice": {"audio_prompt_path": "alice.wav"}, "pause_ms": PAUSE_MS},
    {"text": "Hear what? [sigh]", "voice": {"audio_prompt_path": "bob.wav"}, "pause_ms": 0},
    {"text": "Never mind.", "voice": {"audio_prompt_path": "alice.wav"}},
]


# The same dialogue in SSML: alice, a 400 ms pause, bob (on turbo, with a tag), then alice again.
SSML_DIALOGUE = f"""<speak>
  <voice name="alice">Did you hear that?</voice><break time="{PAUSE_MS}ms"/>
  <voice name="turbo:bob">Hear <say-as interpret-as="characters">what</say-as>? [sigh]</voice>
  <voice name="alice"><s>Never mind.</s></voice>
</speak>"""


@pytest.fixture(scope="module")
def adapter(real_adapter):
    return real_adapter


@pytest.fixture(scope="module")
def client(adapter) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{adapter.url}/v1", api_key="unused", max_retries=0, timeout=300)


def longest_silence(pcm: bytes) -> int:
    """The longest run of digital silence in 16-bit PCM, in samples."""
    silent = np.frombuffer(pcm, dtype="<i2") == 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(np.int8), [0]])))
    return max((end - start for start, end in zip(edges[::2], edges[1::2])), default=0)


def check_timings(segments: list[dict], duration: float) -> None:
    assert [s["index"] for s in segments] == [0, 1, 2]
    assert segments[0]["start_seconds"] == 0.0
    for s in segments:
        assert s["end_seconds"] > s["start_seconds"]
    # The pause after the first segment; none asked after the second.
    assert segments[1]["start_seconds"] - segments[0]["end_seconds"] == pytest.approx(PAUSE_MS / 1000, abs=0.002)
    assert segments[2]["start_seconds"] == pytest.approx(segments[1]["end_seconds"], abs=0.002)
    assert segments[2]["end_seconds"] == pytest.approx(duration, abs=0.002)  # nothing after the last


def check_pause_is_silent(audio: np.ndarray, segments: list[dict], rate: int = SAMPLE_RATE) -> None:
    gap = audio[round(segments[0]["end_seconds"] * rate) + 1 : round(segments[1]["start_seconds"] * rate) - 1]
    assert gap.size > 0.3 * rate and np.max(np.abs(gap)) < 1e-3


def test_http_whole_answer_carries_the_segments_in_a_header(adapter):
    body = {"segments": DIALOGUE, "model": "turbo", "voice": SHORT, "audio": {"format": "wav"}}
    response = requests.post(f"{adapter.url}/api/tts", json=body, timeout=600)
    assert response.status_code == 200, response.text
    audio, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    duration = float(response.headers["X-Audio-Duration-Seconds"])
    assert rate == SAMPLE_RATE and len(audio) / rate == pytest.approx(duration, abs=0.001)
    segments = json.loads(response.headers["X-Segments"])
    check_timings(segments, duration)
    check_pause_is_silent(audio, segments)


def test_http_streamed_script(adapter):
    body = {"segments": DIALOGUE, "model": "turbo", "voice": SHORT, "audio": {"format": "pcm", "stream": True}}
    with requests.post(f"{adapter.url}/api/tts", json=body, stream=True, timeout=600) as response:
        assert response.status_code == 200, response.text
        assert "X-Segments" not in response.headers  # not known when the headers leave
        data = b"".join(response.iter_content(None))
    # The pause is in the stream: the longest run of digital silence is at least 400 ms.
    assert longest_silence(data) >= PAUSE_MS / 1000 * SAMPLE_RATE - 2


def test_websocket_done_reports_each_segments_place(adapter):
    async def session() -> tuple[bytes, dict]:
        async with websockets.connect(adapter.ws_url) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            say = {"type": "say", "id": "d1", "segments": DIALOGUE, "model": "turbo", "voice": SHORT}
            await ws.send(json.dumps(say))
            pcm = b""
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "chunk":
                    pcm += base64.b64decode(message["data"])
                elif message["type"] == "done":
                    return pcm, message
                else:
                    raise AssertionError(message)

    pcm, done = asyncio.run(session())
    assert done["id"] == "d1"
    check_timings(done["segments"], done["duration_seconds"])
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32767
    assert len(audio) / SAMPLE_RATE == pytest.approx(done["duration_seconds"], abs=0.001)
    check_pause_is_silent(audio, done["segments"])


def test_a_plain_text_done_message_has_no_segments(adapter):
    async def session() -> dict:
        async with websockets.connect(adapter.ws_url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "say", "text": "Plain.", "model": "turbo", "voice": SHORT}))
            while (message := json.loads(await ws.recv()))["type"] != "done":
                pass
            return message

    assert "segments" not in asyncio.run(session())


@pytest.mark.parametrize(
    "segments, status, named",
    [
        # A voice that does not exist: the adapter's check names the segment.
        ([{"text": "One."}, {"text": "Two.", "voice": {"audio_prompt_path": "nobody.wav"}}], 404, "segments[1]"),
        # MAX_TEXT_LENGTH (5000) over the sum: named where the sum passes it.
        ([{"text": "a" * 3000}, {"text": "b" * 1500}, {"text": "c" * 1000}], 413, "segments[2]"),
        # The predictor's own refusal (turbo needs a reference longer than 5 s) names it too.
        ([{"text": "One."}, {"text": "Two.", "voice": {"audio_prompt_path": "short.wav"}}], 400, "segments[1]"),
        ([{"text": "x"}] * 65, 413, "segments[64]"),
        ([{"text": "One.", "pause_ms": -1}], 422, "pause_ms"),
    ],
)
def test_a_bad_segment_is_a_4xx_naming_it(adapter, segments, status, named):
    body = {"segments": segments, "model": "turbo", "voice": SHORT}
    response = requests.post(f"{adapter.url}/api/tts", json=body, timeout=600)
    assert response.status_code == status, response.text
    assert named in response.json()["error"]["message"]


def test_text_and_segments_together_are_refused(adapter):
    body = {"text": "Both.", "segments": [{"text": "Both."}]}
    response = requests.post(f"{adapter.url}/api/tts", json=body)
    assert response.status_code == 422 and "either `text` or `segments`" in response.json()["error"]["message"]


# --- SSML -------------------------------------------------------------------------------------


def test_seed_http_ssml_text(adapter):
    body = {"text": SSML_DIALOGUE, "model": "turbo", "voice": SHORT}
    response = requests.post(f"{adapter.url}/api/tts", json=body, timeout=600)
    assert response.status_code == 200, response.text
    audio, _ = sf.read(io.BytesIO(response.content), dtype="float32")
    segments = json.loads(response.headers["X-Segments"])
    check_timings(segments, float(response.headers["X-Audio-Duration-Seconds"]))
    check_pause_is_silent(audio, segments)


def test_openai_sdk_ssml_streams_sse_with_the_segments(client):
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alice",
        input=SSML_DIALOGUE,
        response_format="pcm",
        stream_format="sse",
        extra_body=SHORT,
    ) as response:
        events = sse_events(response.iter_lines())
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    done = events[-1]
    assert done["type"] == "speech.audio.done" and done["usage"]["output_tokens"] > 0
    check_timings(done["segments"], len(pcm) / 2 / SAMPLE_RATE)
    check_pause_is_silent(np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32767, done["segments"])


def test_openai_sdk_ssml_prosody_rate_is_the_speed(client):
    ssml = f'<speak><prosody rate="200%">One.<break time="{PAUSE_MS}ms"/>Two.</prosody></speak>'
    pcm = client.audio.speech.create(
        model="tts-1", voice="alice", input=ssml, response_format="pcm", extra_body=SHORT
    ).read()
    # Twice the tempo: the 400 ms pause lasts 200 ms (a time-stretch leaves silence near zero, not exactly zero).
    audio = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    quiet = np.convolve(audio <= 2, np.ones(SAMPLE_RATE // 100, dtype=np.int32), "valid") == SAMPLE_RATE // 100
    assert 0.12 * SAMPLE_RATE < np.count_nonzero(quiet) < 0.3 * SAMPLE_RATE


@pytest.mark.parametrize("hostile", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_hostile_ssml_is_a_400_on_the_openai_route_and_the_seeds(adapter, client, hostile):
    with pytest.raises(openai.BadRequestError, match="SSML line 2, column 1: DTDs and entities are not accepted"):
        client.audio.speech.create(model="tts-1", voice="alice", input=hostile)
    response = requests.post(f"{adapter.url}/api/tts", json={"text": hostile}, timeout=60)
    assert response.status_code == 400 and "SSML line 2, column 1" in response.json()["error"]["message"]
    assert requests.get(f"{adapter.url}/health").json()["status"] == "healthy"


def test_bad_ssml_names_line_and_column_over_the_websocket(adapter):
    async def session() -> dict:
        async with websockets.connect(adapter.ws_url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "say", "id": 1, "text": "<speak>\n<voice>Hi.</voice></speak>"}))
            return json.loads(await ws.recv())

    error = asyncio.run(session())
    assert (
        error["type"] == "error"
        and error["code"] == 400
        and error["message"] == ("SSML line 2, column 1: <voice> needs a name (a library voice, or variant:voice)")
    )


async def wyoming_exchange(port: int, events: list[Event]) -> list[Event]:
    client = AsyncTcpClient("127.0.0.1", port, connect_timeout=10, read_timeout=300)
    await client.connect()
    try:
        for event in events:
            await client.write_event(event)
        received: list[Event] = []
        while not received or received[-1].type not in ("audio-stop", "error"):
            event = await client.read_event()
            assert event is not None, "the server closed the connection"
            received.append(event)
        return received
    finally:
        await client.disconnect()


def wyoming_pcm(events: list[Event]) -> bytes:
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-1] == "audio-stop", types
    return b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")


# Wyoming sends no token cap, so the server's (40) applies: the dialogue on turbo, as a Home Assistant
# user who picked a turbo voice would hear it, takes the pair of tests 36 s against 92 s on standard.
WYOMING_VOICE = SynthesizeVoice(name="turbo/en/alice.wav")


def test_wyoming_client_speaks_ssml(adapter):
    events = [Synthesize(text=SSML_DIALOGUE, voice=WYOMING_VOICE).event()]
    received = asyncio.run(wyoming_exchange(adapter.wyoming_port, events))
    assert longest_silence(wyoming_pcm(received)) >= PAUSE_MS / 1000 * SAMPLE_RATE - 2


def test_wyoming_streamed_ssml_is_spoken_whole_at_stop(adapter):
    # Home Assistant streams an LLM's answer in pieces that cut elements in two.
    pieces = [SSML_DIALOGUE[i : i + 17] for i in range(0, len(SSML_DIALOGUE), 17)]
    start = SynthesizeStart(voice=WYOMING_VOICE).event()
    events = [start, *(SynthesizeChunk(text=p).event() for p in pieces), SynthesizeStop().event()]
    received = asyncio.run(wyoming_exchange(adapter.wyoming_port, events))
    assert longest_silence(wyoming_pcm(received)) >= PAUSE_MS / 1000 * SAMPLE_RATE - 2


# --- turbo's tags ------------------------------------------------------------------------------


def test_parameters_list_the_tags_read_from_each_tokenizer(adapter):
    tags = requests.get(f"{adapter.url}/api/parameters", timeout=30).json()["tags"]
    assert tags == {"standard": [], "turbo": list(TURBO_TAGS), "multilingual": []}


def test_an_unknown_tag_in_a_later_segment_is_refused_before_any_audio(adapter):
    segments = [*DIALOGUE[:2], {"text": "Never [giggle] mind.", "voice": {"audio_prompt_path": "alice.wav"}}]
    body = {"segments": segments, "model": "turbo", "voice": SHORT, "audio": {"format": "pcm", "stream": True}}
    response = requests.post(f"{adapter.url}/api/tts", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == (
        f"segments[2]: unknown tag [giggle] for the turbo model; its tags are {', '.join(TURBO_TAGS)}"
    )


def test_a_tag_on_a_model_without_tags_is_a_400_on_every_transport(adapter, client):
    no_tags = "model takes no tags (its tokenizer has none), and the text has [laugh]"
    response = requests.post(f"{adapter.url}/api/tts", json={"text": "Hi [laugh].", "model": "standard"}, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["message"] == f"the standard {no_tags}"

    async def websocket() -> dict:
        async with websockets.connect(adapter.ws_url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "say", "id": 1, "text": "Hi [laugh].", "model": "multilingual"}))
            return json.loads(await ws.recv())

    error = asyncio.run(websocket())
    assert (error["type"], error["code"], error["message"]) == ("error", 400, f"the multilingual {no_tags}")

    with pytest.raises(openai.BadRequestError, match=re.escape(f"the standard {no_tags}")):
        client.audio.speech.create(model="tts-1-hd", voice="alice", input="Hi [laugh].")

    voice = SynthesizeVoice(name="standard/en/alice.wav")
    (error_event,) = asyncio.run(wyoming_exchange(adapter.wyoming_port, [Synthesize("Hi [laugh].", voice).event()]))
    assert (error_event.type, error_event.data["code"]) == ("error", "400")
    assert error_event.data["text"] == f"the standard {no_tags}"
