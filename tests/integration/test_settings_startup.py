"""Both services refuse a bad setting at start-up with one line naming the variable, no traceback
(contract.settings), before loading anything heavy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def start(service: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", service]
    if service == "predictor":
        args += ["--http_port", "0", "--grpc_port", "0"]
    return subprocess.run(
        args,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MODEL_DIR": str(tmp_path / "empty"), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "service, name, value",
    [
        ("predictor", "LOG_LEVEL", "loud"),
        ("predictor", "MAX_TEXT_LENGTH", "lots"),
        ("predictor", "STREAM_CHUNK_TOKENS", "6,x"),
        ("predictor", "DEVICE", "tpu"),
        ("adapter", "LOG_LEVEL", "loud"),
        ("adapter", "MAX_CONCURRENT_REQUESTS", "0"),
        ("adapter", "PORT", "http"),
        ("adapter", "PREDICTOR_TIMEOUT_S", "-1"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(tmp_path, service, name, value):
    completed = start(service, tmp_path, **{name: value})
    assert completed.returncode != 0
    lines = [
        line for line in completed.stderr.strip().splitlines() if "Warning" not in line and "pkg_resources" not in line
    ]
    assert "Traceback" not in completed.stderr
    assert name in lines[-1] and value in lines[-1], completed.stderr[-2000:]


def test_the_seeds_rust_log_name_is_read_too(tmp_path):
    completed = start("adapter", tmp_path, RUST_LOG="loud")
    assert completed.returncode != 0 and "loud" in completed.stderr.strip().splitlines()[-1]
