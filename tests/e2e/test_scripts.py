"""Scripts through the real path (the adapter process in front of the real predictor, random weights):
a three-segment dialogue (two voices and a pause) on every transport, with each segment's place in
the audio; and the 4xx that names the segment at fault."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest
import requests
import soundfile as sf
import websockets

from contract.variants import SAMPLE_RATE
from tests.support.servers import start_adapter

pytestmark = pytest.mark.slow

PAUSE_MS = 400
# Short generations (random weights speak noise until max_new_tokens): 8 tokens = 0.32 s each.
SHORT = {"seed": 5, "max_new_tokens": 8}
DIALOGUE = [
    {"text": "Did you hear that?", "voice": {"audio_prompt_path": "alice.wav"}, "pause_ms": PAUSE_MS},
    {"text": "Hear what?", "voice": {"audio_prompt_path": "bob.wav"}, "pause_ms": 0},
    {"text": "Never mind.", "voice": {"audio_prompt_path": "alice.wav"}},
]


@pytest.fixture(scope="module")
def adapter(predictor, voices_dir, tmp_path_factory):
    server = start_adapter(predictor.http_url, voices_dir, tmp_path_factory.mktemp("adapter-logs"))
    yield server
    server.stop()


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
    silent = np.frombuffer(data, dtype="<i2") == 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(np.int8), [0]])))
    longest = max((end - start for start, end in zip(edges[::2], edges[1::2])), default=0)
    assert longest >= PAUSE_MS / 1000 * SAMPLE_RATE - 2


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
