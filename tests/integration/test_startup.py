"""Start-up behaviour of the predictor process: no weights and no network is one clear line and a
non-zero exit; bad settings are refused by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_predictor(tmp_path, **env_overrides) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "MODEL_DIR": str(tmp_path / "empty"),
        **env_overrides,
    }
    return subprocess.run(
        [sys.executable, "-m", "predictor", "--http_port", "0", "--grpc_port", "0"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_no_weights_and_no_network_is_one_clear_line(tmp_path):
    completed = run_predictor(tmp_path)
    assert completed.returncode != 0
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: no weights for the standard model")
    assert "MODEL_DIR" in last_line and "huggingface.co" in last_line
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    "name,value,words",
    [
        ("DEVICE", "tpu", "DEVICE"),
        ("LOAD_TURBO", "maybe", "LOAD_TURBO"),
        ("MAX_CONCURRENT_REQUESTS", "0", "MAX_CONCURRENT_REQUESTS"),
        ("LOAD_STANDARD", "false", "no model selected"),
    ],
)
def test_bad_settings_are_named(tmp_path, name, value, words):
    completed = run_predictor(tmp_path, **{name: value})
    assert completed.returncode != 0
    assert words in completed.stderr.strip().splitlines()[-1]
