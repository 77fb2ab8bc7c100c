"""The documented API through the real path: the adapter process in front of the real predictor
process (real chatterbox code, random weights), called by clients no one here wrote: requests as in
the seed's Python example, websockets, and the seed's JavaScript client in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
import websockets

from adapter.audio import to_pcm16
from scripts.random_weights import write_reference_wav
from tests.support.browser_harness import run_page
from tests.support.servers import start_adapter, start_turbo_predictor
from tests.support.sse import sse_events

pytestmark = pytest.mark.slow
PAGE = Path(__file__).resolve().parents[1] / "support" / "browser" / "seed_client.html"


@pytest.fixture(scope="module")
def adapter(predictor, voices_dir, tmp_path_factory):
    server = start_adapter(predictor.http_url, voices_dir, tmp_path_factory.mktemp("adapter-logs"))
    yield server
    server.stop()


def test_health_reports_the_predictors_real_state(adapter):
    health = requests.get(f"{adapter.url}/health").json()
    assert health["status"] == "healthy"
    assert health["loaded_models"] == ["standard", "turbo", "multilingual"]
    assert health["device"] == "cpu" and health["version"]


def test_seed_python_example_as_written(adapter, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # ---- the seed's Python client, with its address pointed at the test's adapter ----
    response = requests.post(
        f"{adapter.url}/api/tts",
        json={"text": "Hello, this is a test.", "voice": {"exaggeration": 0.7, "cfg_weight": 0.5}},
    )

    with open("output.wav", "wb") as f:
        f.write(response.content)
    # ---- end of the seed's example ----
    assert response.status_code == 200 and response.headers["content-type"].startswith("audio/wav")
    audio, rate = sf.read(tmp_path / "output.wav")
    assert rate == 24000 and len(audio) > 0 and len(audio) % 960 == 0  # whole speech tokens


@pytest.mark.parametrize("stream", [False, True])
def test_http_audio_is_the_predictors_for_the_same_seed(adapter, predictor, stream):
    """Unstreamed, the adapter relays exactly what V2 infer (and so upstream generate()) makes;
    streamed, the same speech tokens rendered chunk by chunk, so the same length."""
    voice = {"seed": 7, "max_new_tokens": 12}
    body = {
        "text": "Exactly the same.",
        "model": "turbo",
        "voice": {"audio_prompt_path": "alice.wav", **voice},
        "audio": {"format": "pcm", "stream": stream},
    }
    relayed = requests.post(f"{adapter.url}/api/tts", json=body)
    assert relayed.status_code == 200, relayed.text
    infer = requests.post(
        f"{predictor.http_url}/v2/models/turbo/infer",
        json={
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Exactly the same."]}],
            "parameters": {"voice": "alice.wav", **voice},
        },
    ).json()
    direct = to_pcm16(np.asarray(infer["outputs"][0]["data"], dtype=np.float32))
    assert len(relayed.content) == len(direct)
    if not stream:
        assert relayed.content == direct


def test_upload_list_default_then_synthesise_with_the_default(adapter, voices_dir):
    source = voices_dir.parent / "upload-source.wav"
    write_reference_wav(source, seconds=6.0, seed=9)
    with open(source, "rb") as handle:
        uploaded = requests.post(f"{adapter.url}/api/voices/upload", files={"file": ("carol.wav", handle, "audio/wav")})
    assert uploaded.status_code == 201, uploaded.text
    voices = {v["name"]: v for v in requests.get(f"{adapter.url}/api/voices").json()["voices"]}
    assert voices["carol.wav"]["sample_rate"] == 24000 and abs(voices["carol.wav"]["duration_seconds"] - 6.0) < 0.01
    assert requests.post(f"{adapter.url}/api/voice/default", json={"voice_path": "carol.wav"}).status_code == 200
    try:
        assert requests.get(f"{adapter.url}/api/voice/default").json()["voice_path"] == "carol.wav"
        # Turbo: the default voice is the adapter's business, any variant shows it (standard's ten
        # float32 flow steps over each new voice's prompt cost a minute of CI here).
        body = {
            "text": "Default voice.",
            "model": "turbo",
            "voice": {"seed": 5, "max_new_tokens": 4},
            "audio": {"format": "pcm"},
        }
        with_default = requests.post(f"{adapter.url}/api/tts", json=body)
        explicit = requests.post(
            f"{adapter.url}/api/tts", json={**body, "voice": {**body["voice"], "audio_prompt_path": "carol.wav"}}
        )
        builtin_body = {**body, "voice": {**body["voice"]}}
        assert with_default.status_code == 200 and with_default.content == explicit.content
    finally:
        (voices_dir / ".default_voice.json").unlink(missing_ok=True)
    builtin = requests.post(f"{adapter.url}/api/tts", json=builtin_body)
    assert builtin.status_code == 200 and builtin.content != with_default.content


@pytest.mark.parametrize("fmt", ["MP3", "FLAC"])
def test_compressed_reference_voice_through_the_real_predictor(adapter, voices_dir, fmt):
    """A voice uploaded as MP3 or FLAC is decoded by the adapter (upload checks), then by upstream's
    loader in the predictor (conditionals), and it changes the audio against the built-in voice."""
    source = voices_dir.parent / f"compressed-{fmt}.wav"
    write_reference_wav(source, seconds=5.5, seed=40 + len(fmt))
    samples, rate = sf.read(source, dtype="float32")
    encoded = io.BytesIO()
    sf.write(encoded, samples, rate, format=fmt)
    name = f"compressed-voice.{fmt.lower()}"
    uploaded = requests.post(
        f"{adapter.url}/api/voices/upload", files={"file": (name, encoded.getvalue())}, data={"overwrite": "true"}
    )
    assert uploaded.status_code == 201, uploaded.text
    listed = {v["name"]: v for v in requests.get(f"{adapter.url}/api/voices").json()["voices"]}
    assert abs(listed[name]["duration_seconds"] - 5.5) < 0.1, listed[name]
    body = {
        "text": "A compressed voice.",
        "model": "turbo",  # upstream's loader is the same for every variant; turbo's decoder is the quickest
        "voice": {"seed": 3, "max_new_tokens": 6},
        "audio": {"format": "pcm"},
    }
    cloned = requests.post(
        f"{adapter.url}/api/tts", json={**body, "voice": {**body["voice"], "audio_prompt_path": name}}, timeout=600
    )
    builtin = requests.post(f"{adapter.url}/api/tts", json=body, timeout=600)
    assert cloned.status_code == 200, cloned.text
    assert builtin.status_code == 200 and len(cloned.content) > 0 and cloned.content != builtin.content


def test_bad_input_through_the_whole_path(adapter):
    cases = [
        ({"text": "Hi.", "voice": {"audio_prompt_path": "../etc/passwd"}}, 400),
        ({"text": "Hi.", "voice": {"audio_prompt_path": "/etc/passwd"}}, 400),
        ({"text": "Hi.", "voice": {"temperature": 9}}, 422),
        ({"text": "x" * 5001}, 413),
        ({"text": "Hi.", "model": "turbo", "voice": {"audio_prompt_path": "short.wav"}}, 400),
    ]
    for body, status in cases:
        response = requests.post(f"{adapter.url}/api/tts", json=body)
        assert response.status_code == status, (body, response.text)
        assert set(response.json()["error"]) >= {"code", "message"}
    assert requests.get(f"{adapter.url}/health").status_code == 200


def test_websocket_say_with_resampling(adapter):
    async def session():
        async with websockets.connect(f"{adapter.ws_url}") as ws:
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready" and ready["device"] == "cpu"
            await ws.send(
                json.dumps(
                    {
                        "type": "say",
                        "id": "r1",
                        "text": "Resample me.",
                        "model": "turbo",
                        "voice": {"seed": 2, "max_new_tokens": 6},
                        "audio": {"format": "pcm_s16le", "sample_rate": 16000, "chunk_size_ms": 40},
                    }
                )
            )
            chunks, done = [], None
            while done is None:
                msg = json.loads(await ws.recv())
                if msg["type"] == "chunk":
                    chunks.append(base64.b64decode(msg["data"]))
                elif msg["type"] == "done":
                    done = msg
                else:
                    raise AssertionError(msg)
            return chunks, done

    chunks, done = asyncio.run(session())
    assert all(len(c) == 1280 for c in chunks[:-1])  # 40 ms of 16-bit mono at 16 kHz
    assert abs(sum(len(c) for c in chunks) / 2 / 16000 - done["duration_seconds"]) < 0.01


def test_seed_javascript_client_in_headless_chromium_streams(adapter):
    result = run_page(PAGE, f"ws={adapter.ws_url}", timeout=600)
    assert not result["errors"], result["errors"]
    kinds = [m["type"] for m in result["messages"]]
    assert kinds[0] == "ready" and kinds[-1] == "done" and "chunk" in kinds
    chunks = [m for m in result["messages"] if m["type"] == "chunk"]
    assert chunks[-1]["is_last"] and [c["index"] for c in chunks] == list(range(len(chunks)))
    done = result["messages"][-1]
    assert result["chunkBytes"] == round(done["duration_seconds"] * 24000) * 2  # pcm_s16le at 24 kHz
    # The first audio arrives while the predictor is still generating the rest: chunks come in
    # bursts as the engine produces them, and the first burst is well before the last.
    first, last = chunks[0]["t"], chunks[-1]["t"]
    assert last - first > 500, (first, last)
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(chunks)]
    assert max(gaps) > 200


def test_streaming_metrics_on_both_sides(adapter, predictor):
    # Its own streamed request, so that the histograms exist however the tests are ordered or selected.
    body = {"text": "Metrics, please.", "voice": {"seed": 5, "max_new_tokens": 30}, "audio": {"stream": True}}
    with requests.post(f"{adapter.url}/api/tts", json=body, stream=True, timeout=600) as response:
        assert response.status_code == 200, response.text
        assert len(b"".join(response.iter_content(None))) > 0
    adapter_metrics = requests.get(f"{adapter.url}/metrics").text
    predictor_metrics = requests.get(f"{predictor.http_url}/metrics").text
    for name in ("adapter_time_to_first_audio_seconds_bucket", "adapter_inter_chunk_gap_seconds_bucket"):
        assert name in adapter_metrics, name
    for name in ("chatterbox_time_to_first_audio_seconds_bucket", "chatterbox_inter_chunk_gap_seconds_bucket"):
        assert name in predictor_metrics, name


@pytest.fixture(scope="module")
def single_slot(weights_dir, voices_dir, tmp_path_factory):
    """A turbo-only predictor and an adapter, each with one slot, for the cancellation tests."""
    predictor = start_turbo_predictor(
        weights_dir,
        voices_dir,
        MAX_CONCURRENT_REQUESTS="1",
        MAX_NEW_TOKENS="400",
        STREAM_CHUNK_TOKENS="4,8",
    )
    adapter = start_adapter(
        predictor.http_url, voices_dir, tmp_path_factory.mktemp("slot-logs"), MAX_CONCURRENT_REQUESTS="1"
    )
    yield predictor, adapter
    adapter.stop()
    predictor.stop()


def _in_flight(predictor) -> float:
    text = requests.get(f"{predictor.http_url}/metrics").text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("chatterbox_requests_in_flight{")
    )


def _wait_idle(predictor, timeout: float = 30.0) -> float:
    started = time.monotonic()
    while _in_flight(predictor) > 0:
        assert time.monotonic() - started < timeout, "the slot was not freed"
        time.sleep(0.05)
    return time.monotonic() - started


def test_http_stream_abort_frees_the_slot(single_slot):
    predictor, _ = single_slot
    long_request = {
        "text_input": "A long sentence that would take minutes to finish on this machine.",
        "parameters": {"seed": 1, "max_new_tokens": 400},
    }
    with requests.post(
        f"{predictor.http_url}/v2/models/turbo/generate_stream", json=long_request, stream=True, timeout=300
    ) as response:
        assert response.status_code == 200
        first = next(line for line in response.iter_lines() if line.startswith(b"data:"))
        assert json.loads(first[5:])["type"] == "chunk"
    _wait_idle(predictor)
    quick = requests.post(
        f"{predictor.http_url}/v2/models/turbo/generate_stream",
        json={"text_input": "Next.", "parameters": {"max_new_tokens": 3}},
        timeout=300,
    )
    assert quick.status_code == 200 and b'"type":"done"' in quick.content
    events = sse_events(quick.content.splitlines())
    assert [e.get("final") for e in events] == [False] * (len(events) - 2) + [True, None]


def test_websocket_close_frees_the_slot(single_slot):
    predictor, adapter = single_slot

    async def say_and_leave():
        async with websockets.connect(adapter.ws_url) as ws:
            await ws.recv()  # ready
            await ws.send(
                json.dumps(
                    {
                        "type": "say",
                        "id": "long",
                        "text": "Talk for a very long time please.",
                        "model": "turbo",
                        "voice": {"seed": 3, "max_new_tokens": 400},
                    }
                )
            )
            while (msg := json.loads(await ws.recv()))["type"] != "chunk":
                assert msg["type"] != "error", msg

    asyncio.run(say_and_leave())
    _wait_idle(predictor)
    served = requests.post(
        f"{adapter.url}/api/tts", json={"text": "Served at once.", "model": "turbo", "voice": {"max_new_tokens": 3}}
    )
    assert served.status_code == 200, served.text
