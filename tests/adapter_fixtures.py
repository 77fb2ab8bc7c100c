"""Fixtures for the adapter's tests: real processes of the adapter (and of a fake predictor).

Import the fixtures a test module uses (`from tests.adapter_fixtures import adapter, ...`,
including the ones they depend on: predictor_url, adapter_voices_dir, adapter_log_dir).
To run the same tests against the real predictor, override two fixtures in that module:

    @pytest.fixture(scope="session")
    def predictor_url(predictor):          # conftest.py's running predictor
        return predictor.http_url

    @pytest.fixture(scope="session")
    def adapter_voices_dir(voices_dir):    # the folder that predictor serves
        return voices_dir

Tests that need the fake's controls (/_test/state, text markers) ask for `fake_predictor`.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

from scripts.processes import free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
FAKE_PREDICTOR = Path(__file__).resolve().parent / "adapter_fake_predictor.py"
START_TIMEOUT_S = 30.0


def make_audio(seconds: float, rate: int = 16000, fmt: str = "WAV", freq: float = 180.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format=fmt)
    return buf.getvalue()


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path
    env: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/tts"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process(self.process, timeout=10)


def _start(cmd: list[str], env: dict, log_dir: Path, name: str, port: int) -> Server:
    log_path = log_dir / f"{name}-{port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(process, port, log_path, env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{name} did not open port {port}:\n{server.log()}")


def start_fake_predictor(
    voices_dir: Path, log_dir: Path, models: str = "standard,turbo", port: int | None = None
) -> Server:
    """`port`: restart on a known address (a predictor coming back after a crash)."""
    port = port or free_port()
    cmd = [
        sys.executable,
        str(FAKE_PREDICTOR),
        "--port",
        str(port),
        "--voices-dir",
        str(voices_dir),
        "--models",
        models,
    ]
    return _start(cmd, dict(os.environ), log_dir, "fake-predictor", port)


def start_adapter(predictor_url: str, voices_dir: Path, log_dir: Path, **env_overrides: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("API_TOKEN", "DEFAULT_VOICE")}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        PREDICTOR_URL=predictor_url,
        VOICES_DIR=str(voices_dir),
        LOG_LEVEL="warning",
        PYTHONPATH=str(ROOT),
    )
    env.update({k: str(v) for k, v in env_overrides.items()})
    return _start([sys.executable, "-m", "adapter"], env, log_dir, "adapter", port)


class FakePredictor:
    def __init__(self, server: Server):
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


@pytest.fixture(scope="session")
def adapter_log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adapter-logs")


@pytest.fixture(scope="session")
def adapter_voices_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adapter-voices")


@pytest.fixture(scope="session")
def fake_predictor(adapter_voices_dir, adapter_log_dir):
    server = start_fake_predictor(adapter_voices_dir, adapter_log_dir)
    yield FakePredictor(server)
    server.stop()


@pytest.fixture(scope="session")
def predictor_url(fake_predictor) -> str:
    return fake_predictor.url


@pytest.fixture(scope="session")
def adapter(predictor_url, adapter_voices_dir, adapter_log_dir):
    """One shared adapter with default settings (tests must not change its default voice)."""
    server = start_adapter(predictor_url, adapter_voices_dir, adapter_log_dir)
    yield server
    server.stop()


@pytest.fixture
def adapter_factory(predictor_url, adapter_log_dir):
    """Start extra adapters with their own settings: adapter_factory(voices_dir, **ENV)."""
    started: list[Server] = []

    def factory(voices_dir: Path, **env: str) -> Server:
        server = start_adapter(predictor_url, voices_dir, adapter_log_dir, **env)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
