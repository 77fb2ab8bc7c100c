"""All shared fixtures: random-weight checkpoints (built once per run), reference voices, a running
predictor with all three variants (started once per session), and the adapter's processes (an adapter in
front of the predictor's sine-wave test double by default; a module overrides `predictor_url` and
`adapter_voices_dir` to put the real predictor behind it; `real_adapter` is one in front of the real
predictor, Wyoming included, shared for the session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contract.variants import VARIANT_NAMES
from scripts.processes import ROOT, ManagedProcess
from tests.support import image_build
from tests.support.servers import (
    FakePredictor,
    start_adapter,
    start_adapter_with_wyoming,
    start_fake_predictor,
    start_predictor,
)

# Tests never reach the hub: fail fast on optional downloads (the multilingual Chinese table).
os.environ["HF_HUB_OFFLINE"] = "1"


def pytest_collection_modifyitems(session, config, items) -> None:
    """When the image tests are to run, their build starts now, in the background, and the tests that
    can share the machine with it run first (tests/support/image_build.py)."""
    if image_build.collected(items) and image_build.wanted():
        items[:] = image_build.order(items)
        if not config.option.collectonly:
            image_build.start()


def pytest_sessionfinish(session, exitstatus) -> None:
    image_build.stop()


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    from scripts.random_weights import is_complete, write_checkpoints

    folder = Path(os.environ.get("CHATTERBOX_TEST_WEIGHTS", ROOT / "build" / "random-weights"))
    # Each variant's files, not just the .complete mark: weights from an older writer lack newer files.
    if not all(is_complete(folder / variant, variant) for variant in VARIANT_NAMES):
        write_checkpoints(folder)
    return folder


@pytest.fixture(scope="session")
def voices_dir(tmp_path_factory) -> Path:
    from scripts.random_weights import write_reference_wav

    folder = tmp_path_factory.mktemp("voices")
    write_reference_wav(folder / "alice.wav", seconds=6.0, seed=1)
    write_reference_wav(folder / "bob.wav", seconds=6.5, seed=2)
    write_reference_wav(folder / "short.wav", seconds=0.1, seed=3)
    return folder


@pytest.fixture(scope="session")
def predictor(weights_dir, voices_dir):
    process = start_predictor(weights_dir, voices_dir)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def real_adapter(predictor, voices_dir, tmp_path_factory):
    """An adapter (Wyoming on too) in front of the session's real predictor, with default settings:
    shared by the end-to-end modules that need nothing else (tests must not change its default voice)."""
    server = start_adapter_with_wyoming(predictor.http_url, voices_dir, tmp_path_factory.mktemp("real-adapter-logs"))
    yield server
    server.stop()


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
    server.stop(timeout=10)


@pytest.fixture
def adapter_factory(predictor_url, adapter_log_dir):
    """Start extra adapters with their own settings: adapter_factory(voices_dir, **ENV)."""
    started: list[ManagedProcess] = []

    def factory(voices_dir: Path, **env: str) -> ManagedProcess:
        server = start_adapter(predictor_url, voices_dir, adapter_log_dir, **env)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop(timeout=10)
