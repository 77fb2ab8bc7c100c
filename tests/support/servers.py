"""Starting the real server processes that tests talk to: the predictor (random weights), the adapter,
and the adapter's sine-wave test double of the predictor. Fixtures wrapping these live in conftest.py."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import requests
import soundfile as sf

from scripts.processes import ManagedProcess, adapter_command, free_port, local_adapter_env, predictor_command

FAKE_PREDICTOR = Path(__file__).resolve().parent / "adapter_fake_predictor.py"
START_TIMEOUT_S = 30.0
# A started request's own bounds (FIRST_CHUNK_TIMEOUT_S, CHUNK_GAP_TIMEOUT_S) for adapters in tests: random
# weights on a shared 2-core CPU can take minutes for a first chunk (a new voice's preparation, the
# standard model in float32); tests of the bounds set their own.
TEST_STREAM_BOUNDS = {"FIRST_CHUNK_TIMEOUT_S": "600", "CHUNK_GAP_TIMEOUT_S": "600"}


def make_audio(seconds: float, rate: int = 16000, fmt: str = "WAV", freq: float = 180.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format=fmt)
    return buf.getvalue()


def predictor_env(weights_dir: Path, voices_dir: Path, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "MODEL_DIR": str(weights_dir),
            "VOICES_DIR": str(voices_dir),
            "HF_HUB_OFFLINE": "1",
            "LOAD_STANDARD": "true",
            "LOAD_TURBO": "true",
            "LOAD_MULTILINGUAL": "true",
            "MAX_CONCURRENT_REQUESTS": "2",
            "MAX_TEXT_LENGTH": "5000",
            "MAX_NEW_TOKENS": "40",  # server-wide cap: clients that never send max_new_tokens (the seed examples) stay quick
            "PYTHONUNBUFFERED": "1",
            "DTYPE": "float32",  # the conformance tests compare with upstream sample for sample
        }
    )
    env.update(overrides)
    return env


def start_predictor(weights_dir: Path, voices_dir: Path, **overrides: str) -> ManagedProcess:
    http_port, grpc_port = free_port(), free_port()
    process = ManagedProcess(
        predictor_command(http_port, grpc_port),
        env=predictor_env(weights_dir, voices_dir, **overrides),
        name="predictor",
    )
    process.port = http_port
    process.http_url = f"http://127.0.0.1:{http_port}"
    process.grpc_url = f"127.0.0.1:{grpc_port}"
    process.wait_http(f"{process.http_url}/v2/health/ready", timeout=600)
    return process


def start_turbo_predictor(weights_dir: Path, voices_dir: Path, **overrides: str) -> ManagedProcess:
    """A predictor with only turbo loaded (the quickest to start), for tests that need their own limits."""
    return start_predictor(
        weights_dir, voices_dir, LOAD_STANDARD="false", LOAD_TURBO="true", LOAD_MULTILINGUAL="false", **overrides
    )


def start_fake_predictor(
    voices_dir: Path, log_dir: Path, models: str = "standard,turbo", port: int | None = None
) -> ManagedProcess:
    """`port`: restart on a known address (a predictor coming back after a crash)."""
    port = port or free_port()
    command = [sys.executable, str(FAKE_PREDICTOR), "--port", str(port), "--voices-dir", str(voices_dir)]
    server = ManagedProcess(command + ["--models", models], dict(os.environ), "fake-predictor", log_dir=log_dir)
    server.port = port
    server.wait_port(port, START_TIMEOUT_S)
    return server


def start_adapter(predictor_url: str, voices_dir: Path, log_dir: Path, **env_overrides: str) -> ManagedProcess:
    port = free_port()
    env = local_adapter_env(port, predictor_url, voices_dir, **{**TEST_STREAM_BOUNDS, **env_overrides})
    server = ManagedProcess(adapter_command(), env, "adapter", log_dir=log_dir)
    server.port = port
    server.wait_port(port, START_TIMEOUT_S)
    return server


def start_adapter_with_wyoming(
    predictor_url: str, voices_dir: Path, log_dir: Path, **env_overrides: str
) -> ManagedProcess:
    """An adapter that also serves Wyoming, on the port in its `wyoming_port`."""
    port = free_port()
    server = start_adapter(predictor_url, voices_dir, log_dir, WYOMING_PORT=str(port), **env_overrides)
    server.wyoming_port = port
    return server


class FakePredictor:
    def __init__(self, server: ManagedProcess):
        self.server = server
        self.url = server.url

    def state(self) -> dict:
        return requests.get(f"{self.url}/_test/state", timeout=5).json()

    def set_ready(self, value: bool) -> None:
        requests.post(f"{self.url}/_test/ready", params={"value": str(value).lower()}, timeout=5)

    def last_request(self) -> dict:
        return self.state()["requests"][-1]

    def wait_idle(self, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if state["active"] == 0 or time.monotonic() > deadline:
                return state
            time.sleep(0.05)


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
