"""The adapter side of `scripts.bench`'s streaming table: `python -m adapter` in front of the bench's
predictor, and timed `say` requests over its WebSocket (/ws/tts, docs/adapter-api.md)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
from websockets.sync.client import connect

from contract.variants import SAMPLE_RATE

from .bench_predictor import StreamResult
from .processes import ManagedProcess, adapter_command, free_port, local_adapter_env


class AdapterProcess:
    """`python -m adapter` relaying to one predictor URL, with the predictor's voice folder."""

    def __init__(self, predictor_url: str, voices_dir: Path):
        port = free_port()
        env = local_adapter_env(port, predictor_url, voices_dir)
        self.process = ManagedProcess(adapter_command(), env=env, name="bench-adapter")
        self.process.port = port
        self.popen = self.process.popen

    def wait_ready(self, timeout: float = 120.0) -> None:
        self.process.wait_http(f"{self.process.url}/health", timeout)

    def stop(self) -> None:
        self.process.stop()

    def say(self, model: str, text: str, voice: dict, stream: bool) -> StreamResult:
        """One `say` on a fresh connection (pcm_s16le, 24 kHz, 40 ms messages); times are from the send."""
        result = StreamResult()
        pieces: list[np.ndarray] = []
        with connect(self.process.ws_url, open_timeout=30, max_size=None) as ws:
            ready = json.loads(ws.recv(timeout=30))
            if ready.get("type") != "ready":
                raise RuntimeError(f"adapter did not say ready: {ready}")
            audio = {"format": "pcm_s16le", "sample_rate": SAMPLE_RATE, "stream": stream}
            message = {"type": "say", "id": "bench", "text": text, "model": model, "voice": voice, "audio": audio}
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
