"""The GPU check's dry run on this CPU (scripts/device_check.sh with DEVICE=cpu and tiny sizes), against
the device kit installed as the GPU host installs it.

The bare GPU host is simulated by a fresh venv (no pip, no site packages) that sees only what that host
has: torch, numpy, scipy, numba and torch's own dependencies, linked from this project's venv. Everything
else must come from the kit (`make device-kit`, built here for this machine's Python 3.11 and torch 2.6,
with fast compression since it is not carried anywhere), or the check fails. The check's config step
also asserts that transformers, kserve and chatterbox are imported from the kit's folder.

Sizes (DRY_* below) keep it to a few minutes on 2 cores: turbo only (standard runs the same code with
another variant name), levels 1 and 2, caps of a few tokens.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "build" / "device-kit-cp311"
# What the GPU host has of its own (its torch, numpy, scipy, numba, and what torch needs).
DEVICE_DISTRIBUTIONS = ("torch", "numpy", "scipy", "numba", "llvmlite", "triton", "sympy", "mpmath", "networkx")
DEVICE_DISTRIBUTIONS += ("Jinja2", "MarkupSafe", "filelock", "fsspec", "typing_extensions")
DRY_RUN = {
    "DEVICE": "cpu",
    "DEVICE_CHECK_VARIANTS": "turbo",
    "TURBO_LEVELS": "1,2",
    "TURBO_TOKENS": "8",
    "TURBO_LONE": "2",
    "STREAM_TOKENS": "8",
    "STREAM_REPEATS": "1",
    "WARMUP_TOKENS": "4",
    "PROFILE_LONE_TOKENS": "6",
    "PROFILE_BATCH": "2",
    "PROFILE_BATCH_TOKENS": "12",
    "GRAPH_LEVELS": "1,2",
    "GRAPH_TOKENS": "8",
    "GRAPH_COMPARE": "2",
    # float32: token for token (bf16 may flip a near-tie; on a CPU the eager batch even attends in
    # float32 over a float32 cache while the static step keeps bf16 buffers).
    "GRAPH_DTYPE": "float32",
    # Loose budgets: on 2 busy cores, numba compiling librosa's kernels in each new process takes minutes.
    "DEVICE_CHECK_BUDGET_S": "1000",
    "BUDGET_PROFILE": "300",
    "BUDGET_TURBO": "500",
    "BUDGET_KIT": "120",
    "BUDGET_GRAPHS": "300",
}


def build_kit() -> None:
    """The kit for this machine's Python (skipped while it is newer than its inputs)."""
    manifest = KIT / "manifest.json"
    inputs = [ROOT / "scripts" / "device_kit.py", ROOT / "requirements.lock"]
    if manifest.exists() and all(manifest.stat().st_mtime > p.stat().st_mtime for p in inputs):
        return
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    torchaudio = importlib.metadata.version("torchaudio").split("+")[0]
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "device_kit.py"), "build", "--out", str(KIT)]
        + ["--python-version", version, "--torchaudio", torchaudio, "--xz-preset", "0", "--limit-mib", "1000"],
        check=True,
        cwd=ROOT,
    )


def bare_python(folder: Path) -> Path:
    """A venv with nothing but links to the device's own distributions (their files and metadata)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next((folder / "lib").glob("python3*/site-packages"))
    names = set(DEVICE_DISTRIBUTIONS)
    names |= {
        d.metadata["Name"] for d in importlib.metadata.distributions() if d.metadata["Name"].startswith("nvidia-")
    }
    for name in sorted(names):
        distribution = importlib.metadata.distribution(name)
        base = Path(str(distribution.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in distribution.files or [] if not str(f).startswith("..")}
        for top in tops:
            link, source = site / top, base / top
            if source.exists() and not link.exists():
                link.symlink_to(source)
    return folder / "bin" / "python"


def test_device_check_dry_run(tmp_path, weights_dir):
    build_kit()
    python = bare_python(tmp_path / "device-python")
    # The bare Python cannot import what the kit brings.
    probe = subprocess.run([str(python), "-c", "import transformers"], capture_output=True, cwd=tmp_path)
    assert probe.returncode != 0, "the simulated device should not have transformers of its own"

    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    env.update(DRY_RUN)
    env.update(
        OUT=str(out),
        PYTHON=str(python),
        KIT=str(KIT),
        DEVICE_CHECK_WORK=str(tmp_path / "work"),
        DEVICE_CHECK_WEIGHTS=str(weights_dir),  # complete already: random_weights only checks it
    )
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "scripts/device_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1100
    )
    elapsed = time.monotonic() - started
    print(result.stderr[-5000:])
    print(f"dry run: {elapsed:.0f} s")
    assert result.returncode == 0, result.stderr[-3000:]

    phases = [line.split("\t") for line in (out / "phases.tsv").read_text().splitlines()]
    assert [p[0] for p in phases] == ["kit", "weights", "profile", "graphs", "bench-turbo"], phases
    failed = {name: rc for name, rc, _, _ in phases if rc != "0"}
    logs = {p.name: p.read_text(errors="replace")[-2000:] for p in (out / "logs").glob("*.log")}
    assert not failed, (failed, logs)

    install = json.loads((out / "kit-install.json").read_text())
    # The bare Python has none of the fallbacks' modules.
    assert set(install["fallbacks_installed"]) == {"onnx", "pandas", "PIL", "sklearn"}, install
    config = (out / "config.txt").read_text()
    assert "device=cpu" in config and "(kit)" in config, config

    profile = [json.loads(line) for line in (out / "profile.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in profile] == ["lone", "tick"], profile
    tick = profile[1]
    assert tick["rows_in_t3_batch"] == 2 and tick["t3_steps_in_tick"] == 1, tick
    assert tick["t3_step"]["aten_ops"] > 100 and tick["t3_step"]["kernel_launches"] == 0, tick
    for record in profile:
        trace = json.loads(gzip.decompress((out / record["trace"]).read_bytes()))
        names = {event.get("name") for event in trace["traceEvents"]}
        assert any(str(n).startswith("aten::") for n in names), record["trace"]
    assert "t3_step" in {e.get("name") for e in trace["traceEvents"]}

    bench = [json.loads(line) for line in (out / "bench-turbo.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in bench]
    assert kinds.count("lone") == 2 and kinds.count("streaming") == 1, kinds
    assert [r["level"] for r in bench if r["kind"] == "level"] == [1, 2], kinds
    assert all(r["audio_s"] > 0 for r in bench if r["kind"] in ("lone", "level")), bench
    assert any(p.name.startswith("bench-predictor") for p in (out / "logs").iterdir()), "predictor log kept"

    summary = (out / "summary.md").read_text()
    for heading in ("## Targets", "## Phases", "## Concurrency", "## Lone requests", "## Streaming", "## Profile"):
        assert heading in summary, heading
    assert "| turbo lone: time to first audio, median | <= 150 ms |" in summary
    assert "| turbo | 8 | 2 |" in summary, summary  # the N=2 concurrency row
    assert "turbo-tick2.json.gz" in summary
    graphs = json.loads((out / "graphs.json").read_text())
    assert graphs["tokens"] == {"requests": 2, "matched": 2, "first_difference": {}}, graphs
    assert [row["level"] for row in graphs["ticks"]] == [1, 2] and "## CUDA graphs" in summary
