"""The adapter side of `scripts.bench`'s streaming table: `python -m adapter` in front of the bench's
predictor, and timed `say` requests over its WebSocket (/ws/tts, docs/adapter-api.md)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from websockets.sync.client import connect

from .bench_predictor import ROOT, SAMPLE_RATE, StreamResult
from .processes import free_port, stop_process


class AdapterProcess:
    """`python -m adapter` relaying to one predictor URL, with the predictor's voice folder."""

    def __init__(self, predictor_url: str, voices_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/tts"
        env = {k: v for k, v in os.environ.items() if k not in ("API_TOKEN", "DEFAULT_VOICE")}
        env.update(
            HOST="127.0.0.1",
            PORT=str(self.port),
            PREDICTOR_URL=predictor_url,
            VOICES_DIR=str(voices_dir),
            LOG_LEVEL="warning",
            PYTHONUNBUFFERED="1",
        )
        self.log = tempfile.NamedTemporaryFile(prefix="bench-adapter-", suffix=".log", delete=False)  # noqa: SIM115 (lives as long as the process)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "adapter"], env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                with open(self.log.name, errors="replace") as handle:
                    raise RuntimeError(f"adapter exited with {self.popen.returncode}:\n{handle.read()[-4000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"adapter not ready after {timeout:.0f} s")

    def stop(self) -> None:
        stop_process(self.popen)
        try:
            os.unlink(self.log.name)
        except OSError:
            pass

    def say(self, model: str, text: str, voice: dict, stream: bool) -> StreamResult:
        """One `say` on a fresh connection (pcm_s16le, 24 kHz, 40 ms messages); times are from the send."""
        result = StreamResult()
        pieces: list[np.ndarray] = []
        with connect(self.ws_url, open_timeout=30, max_size=None) as ws:
            ready = json.loads(ws.recv(timeout=30))
            if ready.get("type") != "ready":
                raise RuntimeError(f"adapter did not say ready: {ready}")
            message = {"type": "say", "id": "bench", "text": text, "model": model, "voice": voice}
            message["audio"] = {"format": "pcm_s16le", "sample_rate": SAMPLE_RATE, "stream": stream}
            sent = time.perf_counter()
            ws.send(json.dumps(message))
            while True:
                reply = json.loads(ws.recv(timeout=1800))
                now = time.perf_counter() - sent
                if reply["type"] == "chunk":
                    samples = np.frombuffer(base64.b64decode(reply["data"]), dtype="<i2").astype(np.float32) / 32768
                    if len(samples):
                        if result.first_chunk_seconds is None:
                            result.first_chunk_seconds = now
                        pieces.append(samples)
                        result.chunk_times.append(now)
                        result.chunk_samples.append(len(samples))
                elif reply["type"] == "done":
                    result.total_seconds = now
                    break
                else:
                    raise RuntimeError(f"WebSocket say failed: {reply}")
        if result.first_chunk_seconds is None:
            raise RuntimeError("WebSocket say ended without audio")
        result.audio = np.concatenate(pieces)
        return result
