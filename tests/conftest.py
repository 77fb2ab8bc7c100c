"""Shared fixtures: random-weight checkpoints (built once per run), reference voices, and a running
predictor process with all three variants, started once per session and shared by the test modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .processes import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[1]
# Tests never reach the hub: fail fast on optional downloads (the multilingual Chinese table).
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    from predictor.random_weights import write_checkpoints

    folder = Path(os.environ.get("CHATTERBOX_TEST_WEIGHTS", REPO / "build" / "random-weights"))
    if not (folder / ".complete").exists():
        write_checkpoints(folder)
    return folder


@pytest.fixture(scope="session")
def voices_dir(tmp_path_factory) -> Path:
    from predictor.random_weights import write_reference_wav

    folder = tmp_path_factory.mktemp("voices")
    write_reference_wav(folder / "alice.wav", seconds=6.0, seed=1)
    write_reference_wav(folder / "bob.wav", seconds=6.5, seed=2)
    write_reference_wav(folder / "short.wav", seconds=0.1, seed=3)
    return folder


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
        }
    )
    env.update(overrides)
    return env


def start_predictor(weights_dir: Path, voices_dir: Path, **overrides: str) -> ManagedProcess:
    http_port, grpc_port = free_port(), free_port()
    process = ManagedProcess(
        [sys.executable, "-m", "predictor", "--http_port", str(http_port), "--grpc_port", str(grpc_port)],
        env=predictor_env(weights_dir, voices_dir, **overrides),
        cwd=REPO,
        name="predictor",
    )
    process.http_url = f"http://127.0.0.1:{http_port}"
    process.grpc_url = f"127.0.0.1:{grpc_port}"
    process.wait_http(f"{process.http_url}/v2/health/ready", timeout=600)
    return process


@pytest.fixture(scope="session")
def predictor(weights_dir, voices_dir):
    process = start_predictor(weights_dir, voices_dir)
    yield process
    process.stop()
