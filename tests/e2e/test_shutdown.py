"""Graceful shutdown (issue 13.3), with real processes and clients no one here wrote.

SIGTERM to the predictor or the adapter: readiness turns false at once, new work is refused cleanly
(503 + Retry-After, gRPC UNAVAILABLE), work in flight finishes with its `done`, and the drain is
bounded by DRAIN_TIMEOUT_S: what still runs then ends with an error that says the server is shutting
down. The adapter's cases use the sine-wave predictor double; the predictor's use the real one.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import pytest
import requests
import tritonclient.grpc as grpcclient
import websockets
from tritonclient.utils import InferenceServerException

from predictor.shutdown import CUT_GRACE_S
from tests.support.servers import start_adapter, start_fake_predictor, start_predictor

pytestmark = pytest.mark.slow

# The adapter's drain ends: bound + the cut grace (adapter/shutdown.py) + uvicorn's grace, with room
# for a busy test machine.
ADAPTER_EXIT_S = 20.0
# uvicorn re-raises the signal once it has shut down, so a clean exit may read as "killed by SIGTERM".
EXITED_ON_SIGTERM = (0, -signal.SIGTERM)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    server = start_fake_predictor(tmp_path_factory.mktemp("voices"), tmp_path_factory.mktemp("logs"))
    yield server
    server.stop()


def _adapter(fake, tmp_path, **env):
    (tmp_path / "voices").mkdir(exist_ok=True)
    return start_adapter(fake.url, tmp_path / "voices", tmp_path, **env)


def _wait_status(url: str, status: int, timeout: float) -> float:
    """Seconds until GET url answers `status`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if requests.get(url, timeout=2).status_code == status:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{url} did not answer {status} within {timeout} s")


def _refused_cleanly(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers.get("Retry-After", "").isdigit()
    assert "shutting down" in response.text


def _served_or_refused(result: dict) -> None:
    """A request sent in the instant of the signal: served in full, or refused with 503 + Retry-After."""
    response = result.get("response")
    assert response is not None, f"no answer: {result.get('error')!r}"
    if response.status_code == 200:
        assert len(response.content) > 44
    else:
        _refused_cleanly(response)


def test_adapter_sigterm_lets_a_websocket_stream_finish(fake, tmp_path):
    adapter = _adapter(fake, tmp_path, DRAIN_TIMEOUT_S="30")
    instant: dict = {}

    def post_at_signal():
        try:
            instant["response"] = requests.post(f"{adapter.url}/api/tts", json={"text": "At the signal."}, timeout=30)
        except requests.RequestException as exc:
            instant["error"] = exc

    async def scenario():
        async with websockets.connect(adapter.ws_url) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(json.dumps({"type": "say", "id": "a", "text": "Finish me. [paced]"}))
            assert json.loads(await ws.recv())["type"] == "chunk"
            racer = threading.Thread(target=post_at_signal)
            racer.start()
            adapter.popen.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            took = await asyncio.to_thread(_wait_status, f"{adapter.url}/health", 503, 5)
            health = await asyncio.to_thread(requests.get, f"{adapter.url}/health")
            assert health.json()["status"] == "shutting_down"
            _refused_cleanly(await asyncio.to_thread(requests.post, f"{adapter.url}/api/tts", json={"text": "New."}))
            await ws.send(json.dumps({"type": "say", "id": "b", "text": "Too late."}))
            messages = []
            while not any(m.get("type") == "done" and m.get("id") == "a" for m in messages):
                messages.append(json.loads(await ws.recv()))
            refused = [m for m in messages if m.get("id") == "b"]
            assert refused and refused[0]["type"] == "error" and refused[0]["code"] == 503
            assert "shutting down" in refused[0]["message"]
            chunks = [m for m in messages if m.get("type") == "chunk" and m.get("id") == "a"]
            assert chunks and chunks[-1]["is_last"] is True
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), ADAPTER_EXIT_S)
            assert closed.value.rcvd.code == 1012
            racer.join(30)
            return took, time.monotonic() - signalled

    try:
        took, drained = asyncio.run(scenario())
        assert took < 2.0, f"/health turned 503 only after {took:.2f} s"
        assert adapter.popen.wait(ADAPTER_EXIT_S) in EXITED_ON_SIGTERM
        _served_or_refused(instant)
    finally:
        adapter.stop()
    print(f"adapter drain: health 503 after {took:.3f} s; stream done and closed 1012 after {drained:.2f} s")


def test_adapter_drain_bound_ends_streams_with_an_error(fake, tmp_path):
    adapter = _adapter(fake, tmp_path, DRAIN_TIMEOUT_S="1")
    http = requests.post(
        f"{adapter.url}/api/tts",
        json={"text": "Endless. [slow]", "audio": {"format": "pcm", "stream": True}},
        stream=True,
    )
    assert http.status_code == 200
    body = http.iter_content(chunk_size=None)
    assert next(body)

    async def scenario():
        async with websockets.connect(adapter.ws_url) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(json.dumps({"type": "say", "id": "w", "text": "Endless. [slow]"}))
            assert json.loads(await ws.recv())["type"] == "chunk"
            adapter.popen.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), ADAPTER_EXIT_S))
                if message["type"] != "chunk":
                    break
            assert message["type"] == "error" and message["id"] == "w" and message["code"] == 503, message
            assert "shutting down" in message["message"]
            ended = time.monotonic() - signalled
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), ADAPTER_EXIT_S)
            assert closed.value.rcvd.code == 1012
            return ended

    try:
        ended = asyncio.run(scenario())
        # The HTTP stream was cut too: its chunked body is never terminated, so the client sees a
        # failed transfer, never a silently shorter file.
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for _ in body:
                pass
        assert adapter.popen.wait(ADAPTER_EXIT_S) in EXITED_ON_SIGTERM
    finally:
        adapter.stop()
    assert 1.0 <= ended < 1.0 + 5.0, f"the stream ended {ended:.2f} s after SIGTERM (bound 1 s + 5 s grace)"
    print(f"adapter drain bound 1 s: WebSocket error after {ended:.2f} s")


# ---- the predictor: real chatterbox code, random weights ------------------------------------------

# Two pieces of at most 6 tokens: one chunk each (the first streaming chunk is 6 tokens), so the
# second is still to come when the signal follows the first; small, for busy CPUs.
TWO_PIECES = "The first piece is here. A second piece follows it."


def _stream(url: str, text: str, max_new_tokens: int) -> requests.Response:
    return requests.post(
        f"{url}/v2/models/turbo/generate_stream",
        json={"text_input": text, "parameters": {"max_new_tokens": max_new_tokens, "seed": 1}, "incremental": True},
        stream=True,
        timeout=600,  # one engine step on a busy 2-core CPU can take a minute
    )


def _events(response: requests.Response):
    for line in response.iter_lines():
        if line.startswith(b"data:"):
            yield json.loads(line[5:])


def _grpc_infer(grpc_url: str) -> InferenceServerException | None:
    client = grpcclient.InferenceServerClient(grpc_url)
    text = grpcclient.InferInput("text", [1], "BYTES")
    import numpy as np

    text.set_data_from_numpy(np.array([b"Refused?"], dtype=object))
    try:
        client.infer("turbo", [text], parameters={"max_new_tokens": 2})
    except InferenceServerException as exc:
        return exc
    finally:
        client.close()
    return None


def _turbo_predictor(weights_dir, voices_dir, drain_s: str, **env: str):
    return start_predictor(
        weights_dir,
        voices_dir,
        LOAD_STANDARD="false",
        LOAD_TURBO="true",
        LOAD_MULTILINGUAL="false",
        DRAIN_TIMEOUT_S=drain_s,
        MAX_CONCURRENT_REQUESTS="2",
        **env,
    )


def test_predictor_sigterm_drains_the_stream_and_refuses_new_work(weights_dir, voices_dir):
    predictor = _turbo_predictor(weights_dir, voices_dir, "120")
    instant: dict = {}

    def stream_at_signal():
        try:
            response = _stream(predictor.http_url, "At the signal.", 2)
            instant["status"] = response.status_code
            instant["headers"] = response.headers
            instant["events"] = list(_events(response)) if response.status_code == 200 else response.json()
        except requests.RequestException as exc:
            instant["error"] = exc

    try:
        # Long enough (seconds of decoding) that the predictor is still draining it while the checks run.
        stream = _stream(predictor.http_url, TWO_PIECES, 30)
        assert stream.status_code == 200
        events = _events(stream)
        assert next(events)["type"] == "chunk"
        racer = threading.Thread(target=stream_at_signal)
        racer.start()
        predictor.popen.send_signal(signal.SIGTERM)
        took = _wait_status(f"{predictor.http_url}/v2/health/ready", 503, 5)
        assert requests.get(f"{predictor.http_url}/v2/models/turbo/ready").status_code == 503
        assert requests.get(f"{predictor.http_url}/v2/health/live").status_code == 200
        refused = _stream(predictor.http_url, "New work.", 2)
        _refused_cleanly(refused)
        grpc_client = grpcclient.InferenceServerClient(predictor.grpc_url)
        assert grpc_client.is_server_ready() is False and grpc_client.is_model_ready("turbo") is False
        grpc_client.close()
        error = _grpc_infer(predictor.grpc_url)
        assert error is not None and "UNAVAILABLE" in str(error.status()), error
        rest = list(events)
        assert rest and rest[-1]["type"] == "done", rest[-1:]
        assert rest[-1]["chunks"] == 1 + sum(e["type"] == "chunk" for e in rest)
        racer.join(600)
        assert "error" not in instant, instant
        if instant["status"] == 200:
            assert instant["events"][-1]["type"] == "done"
        else:
            assert instant["status"] == 503 and instant["headers"].get("Retry-After"), instant
        assert predictor.popen.wait(CUT_GRACE_S + 60) in EXITED_ON_SIGTERM
    finally:
        predictor.stop()
    print(
        f"predictor drain: ready 503 after {took:.3f} s; the stream ended with done; a racing request got {instant['status']}"
    )


def test_predictor_drain_bound_ends_a_stream_with_an_error_event(weights_dir, voices_dir):
    # The shared test cap (MAX_NEW_TOKENS=40) would refuse the long request below.
    predictor = _turbo_predictor(weights_dir, voices_dir, "1", MAX_NEW_TOKENS="1000")
    try:
        # Far more speech than the bound allows (random weights rarely stop on their own).
        stream = _stream(predictor.http_url, "This one is long.", 1000)
        assert stream.status_code == 200, stream.text
        events = _events(stream)
        assert next(events)["type"] == "chunk"
        predictor.popen.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        rest = list(events)
        ended = time.monotonic() - signalled
        assert rest and rest[-1]["type"] == "error", rest[-1:]
        assert rest[-1]["code"] == 503 and "shutting down" in rest[-1]["message"]
        assert predictor.popen.wait(CUT_GRACE_S + 60) in EXITED_ON_SIGTERM
    finally:
        predictor.stop()
    # 1 s bound, then the request stops at its next engine step (10 tokens or one vocoder chunk).
    assert ended < 1.0 + CUT_GRACE_S, f"the stream ended {ended:.2f} s after SIGTERM"
    print(f"predictor drain bound 1 s: error event after {ended:.2f} s")
