"""`make run`: the predictor and the adapter on one machine, stopped together on Ctrl-C.

Configuration comes from the environment (see the README's table); the ports from the Makefile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"error: the predictor exited with status {process.returncode} (see its output above)")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"error: the predictor was not ready at {url} after {timeout:.0f} s")


def main() -> int:
    http_port = os.environ.get("PREDICTOR_HTTP_PORT", "8080")
    grpc_port = os.environ.get("PREDICTOR_GRPC_PORT", "8082")
    adapter_port = os.environ.get("ADAPTER_PORT", os.environ.get("PORT", "8081"))
    voices_dir = Path(os.environ.setdefault("VOICES_DIR", str(ROOT / "voices")))
    voices_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    predictor = subprocess.Popen(
        [sys.executable, "-m", "predictor", "--http_port", http_port, "--grpc_port", grpc_port], cwd=ROOT, env=env
    )
    processes = [predictor]
    try:
        print(
            f"Loading models (MODEL_DIR={env.get('MODEL_DIR', 'unset: downloading from the Hugging Face hub')}) ...",
            flush=True,
        )
        wait_ready(f"http://127.0.0.1:{http_port}/v2/health/ready", predictor, timeout=3600)
        adapter_env = {**env, "PORT": adapter_port, "PREDICTOR_URL": f"http://127.0.0.1:{http_port}"}
        processes.append(subprocess.Popen([sys.executable, "-m", "adapter"], cwd=ROOT, env=adapter_env))
        print(
            "\nChatterbox TTS is up:\n"
            f"  HTTP/WebSocket API  http://localhost:{adapter_port}   (e.g. POST /api/tts, ws://localhost:{adapter_port}/ws/tts)\n"
            f"  KServe V2 REST      http://localhost:{http_port}/v2/models/standard/infer\n"
            f"  KServe V2 gRPC      localhost:{grpc_port}\n"
            f"  voices folder       {voices_dir}\n"
            "Press Ctrl-C to stop both.\n",
            flush=True,
        )
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        return next(p.returncode for p in processes if p.poll() is not None) or 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
