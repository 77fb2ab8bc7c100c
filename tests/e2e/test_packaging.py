"""`pip install ".[adapter]"` in a clean Python 3.11 virtual environment gives a working adapter
without torch: it starts, and /health says the predictor is unavailable (503) while none is reachable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scripts.processes import ROOT, ManagedProcess, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("adapter-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "requirements.lock"), f"{ROOT}[adapter]"]
    result = subprocess.run(install, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return venv


def test_the_adapter_extra_installs_without_torch(adapter_venv, tmp_path):
    python = adapter_venv / "bin" / "python"
    probe = "import importlib.util, adapter.app; print(importlib.util.find_spec('torch') is None)"
    # Run outside the checkout, so that only the installed package can be imported.
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "True", "torch was installed with the adapter extra"


def test_the_installed_adapter_starts_and_reports_no_predictor(adapter_venv, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "API_TOKEN", "INFERENCESERVICE_NAME")}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        PREDICTOR_URL=f"http://127.0.0.1:{free_port()}",  # nobody listens there
        VOICES_DIR=str(tmp_path / "voices"),
    )
    process = ManagedProcess(
        [str(adapter_venv / "bin" / "python"), "-m", "adapter"], env=env, name="installed-adapter", cwd=tmp_path
    )
    process.port = port
    try:
        process.wait_http(f"{process.url}/health", timeout=60, expect_status=503)
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"{process.url}/health", timeout=10)
        assert answer.value.code == 503
        body = json.loads(answer.value.read())
        assert body["status"] == "predictor_unavailable", body
    finally:
        process.stop(timeout=10)
