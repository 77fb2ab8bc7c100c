"""`make run`: the predictor and the adapter on one machine, stopped together on Ctrl-C.

Configuration comes from the environment (see the README's table); the ports from the Makefile.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from scripts.processes import ROOT, ManagedProcess, adapter_command, predictor_command


def main() -> int:
    http_port = os.environ.get("PREDICTOR_HTTP_PORT", "8080")
    grpc_port = os.environ.get("PREDICTOR_GRPC_PORT", "8082")
    # The seed's PORT and HOST are the adapter's (the API users call); the predictor's ports are internal.
    adapter_port = os.environ.get("PORT", "8081")
    voices_dir = Path(os.environ.setdefault("VOICES_DIR", str(ROOT / "voices")))
    voices_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    predictor = ManagedProcess(
        predictor_command(int(http_port), int(grpc_port)), env=env, name="predictor", inherit_output=True
    )
    processes = [predictor]
    try:
        print(
            f"Loading models (MODEL_DIR={env.get('MODEL_DIR', 'unset: downloading from the Hugging Face hub')}) ...",
            flush=True,
        )
        try:
            predictor.wait_http(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=3600)
        except (RuntimeError, TimeoutError) as exc:
            raise SystemExit(f"error: the predictor did not become ready ({str(exc).splitlines()[0]})") from None
        adapter_env = {**env, "PORT": adapter_port, "PREDICTOR_URL": f"http://127.0.0.1:{http_port}"}
        processes.append(ManagedProcess(adapter_command(), env=adapter_env, name="adapter", inherit_output=True))
        print(
            "\nChatterbox TTS is up:\n"
            f"  HTTP/WebSocket API  http://localhost:{adapter_port}   (e.g. POST /api/tts, ws://localhost:{adapter_port}/ws/tts)\n"
            f"  KServe V2 REST      http://localhost:{http_port}/v2/models/standard/infer\n"
            f"  KServe V2 gRPC      localhost:{grpc_port}\n"
            f"  voices folder       {voices_dir}\n"
            "Press Ctrl-C to stop both.\n",
            flush=True,
        )
        while all(p.alive() for p in processes):
            time.sleep(0.5)
        return next(p.popen.returncode for p in processes if not p.alive()) or 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in reversed(processes):
            process.stop()


if __name__ == "__main__":
    sys.exit(main())
