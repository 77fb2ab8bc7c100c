"""The predictor side of `scripts.bench`: the `python -m predictor` process, and timed calls to its
V2 REST infer route and its SSE streaming route (docs/predictor-api.md)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

from contract.stream import STREAM_PATH, ChunkEvent, DoneEvent, ErrorEvent, EventReader, GenerateStreamRequest
from contract.variants import SAMPLE_RATE

from .processes import ManagedProcess, free_port, predictor_command

ROOT = Path(__file__).resolve().parents[1]
BUSY_RETRY_SECONDS = 30.0  # MAX_CONCURRENT_REQUESTS=1: the slot of the previous call may free a moment late


class PredictorClient:
    """Timed calls to a running predictor: its V2 REST infer route and its SSE streaming route.
    One per thread (a requests.Session is not shared between threads)."""

    def __init__(self, url: str):
        self.url = url
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    # ---- timed calls -------------------------------------------------------------------------
    def _post(self, path: str, body: dict, stream: bool) -> tuple[requests.Response, float]:
        """POST, retrying while the single slot is still held by the previous call (429).
        Returns the response and the perf_counter() at which the answered attempt was sent."""
        deadline = time.monotonic() + BUSY_RETRY_SECONDS
        while True:
            sent = time.perf_counter()
            response = self.session.post(
                f"{self.url}{path}",
                data=json.dumps(body),
                headers={"Content-Type": "application/json"},
                stream=stream,
                timeout=1800,
            )
            if response.status_code != 429 or time.monotonic() > deadline:
                break
            response.close()
            time.sleep(0.05)
        if response.status_code != 200:
            raise RuntimeError(f"POST {path}: HTTP {response.status_code}: {response.text[:500]}")
        return response, sent

    def infer(self, model: str, text: str, parameters: dict) -> InferResult:
        """V2 infer over REST (all-JSON body): wall time until the whole response is parsed."""
        body = {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}],
            "parameters": parameters,
        }
        response, sent = self._post(f"/v2/models/{model}/infer", body, stream=False)
        payload = response.json()
        elapsed = time.perf_counter() - sent
        output = next(o for o in payload["outputs"] if o["name"] == "audio")
        audio = np.asarray(output["data"], dtype=np.float32)
        tokens = (payload.get("parameters") or {}).get("speech_tokens")
        return InferResult(seconds=elapsed, audio=audio, speech_tokens=tokens)

    def stream(self, model: str, text: str, parameters: dict) -> StreamResult:
        """generate_stream (SSE): time to the first `chunk` event and to the `done` event."""
        request = GenerateStreamRequest(text_input=text, parameters=parameters)
        response, sent = self._post(STREAM_PATH.format(model=model), request.model_dump(), stream=True)
        result = StreamResult()
        reader = EventReader()
        chunks: list[np.ndarray] = []
        try:
            # chunk_size=None: hand over bytes as they arrive, so an event is seen as soon as it is whole.
            for line in response.iter_lines(chunk_size=None, decode_unicode=True):  # type: ignore[call-overload]  # requests takes None; types-requests says int
                event = reader.feed(line)
                now = time.perf_counter()
                if isinstance(event, ChunkEvent):
                    if result.first_chunk_seconds is None:
                        result.first_chunk_seconds = now - sent
                    chunks.append(event.samples())
                    result.chunk_times.append(now - sent)
                    result.chunk_samples.append(len(chunks[-1]))
                elif isinstance(event, DoneEvent):
                    result.total_seconds = now - sent
                    result.speech_tokens = event.speech_tokens
                    break
                elif isinstance(event, ErrorEvent):
                    raise RuntimeError(f"stream error {event.code}: {event.message}")
        finally:
            response.close()
        if result.total_seconds is None or result.first_chunk_seconds is None:
            raise RuntimeError("stream ended without audio or without a done event")
        result.audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return result


class PredictorProcess(PredictorClient):
    """`python -m predictor` with only the given variants, one voice in a temporary VOICES_DIR."""

    def __init__(
        self,
        weights: Path,
        voices_dir: Path,
        variants: list[str],
        device: str,
        threads: int | None,
        env_overrides: dict[str, str] | None = None,
    ):
        self.http_port, self.grpc_port = free_port(), free_port()
        super().__init__(f"http://127.0.0.1:{self.http_port}")
        env = dict(os.environ)
        env.update(
            {
                "MODEL_DIR": str(weights),
                "VOICES_DIR": str(voices_dir),
                "HF_HUB_OFFLINE": "1",
                "DEVICE": device,
                "LOAD_STANDARD": str("standard" in variants).lower(),
                "LOAD_TURBO": str("turbo" in variants).lower(),
                "LOAD_MULTILINGUAL": str("multilingual" in variants).lower(),
                "MAX_CONCURRENT_REQUESTS": "1",
                "MAX_NEW_TOKENS": "1000",
                "LOG_LEVEL": "warning",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if threads:
            env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
        env.update(env_overrides or {})
        # BENCH_LOG_DIR keeps each predictor's log there (a run on a borrowed machine reads them afterwards).
        self.log_dir = Path(os.environ["BENCH_LOG_DIR"]) if os.environ.get("BENCH_LOG_DIR") else None
        self.process = ManagedProcess(
            predictor_command(self.http_port, self.grpc_port, model_dir=weights),
            env=env,
            name="bench-predictor",
            log_dir=self.log_dir,
        )
        self.popen = self.process.popen

    def wait_ready(self, timeout: float = 900.0) -> float:
        """Block until /v2/health/ready answers 200; returns the seconds since launch."""
        return self.process.wait_http(f"{self.url}/v2/health/ready", timeout)

    def info(self) -> dict:
        return self.session.get(f"{self.url}/v2/chatterbox/info", timeout=10).json()

    def stop(self) -> None:
        self.session.close()
        self.process.stop()
        if self.process.log_path is not None and self.log_dir is None:
            self.process.log_path.unlink(missing_ok=True)


@dataclass
class InferResult:
    seconds: float
    audio: np.ndarray
    speech_tokens: int | None = None


@dataclass
class StreamResult:
    first_chunk_seconds: float | None = None
    total_seconds: float | None = None
    speech_tokens: int | None = None
    chunk_times: list[float] = field(default_factory=list)  # arrival of each chunk, seconds from the send
    chunk_samples: list[int] = field(default_factory=list)
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    @property
    def startup_delay_seconds(self) -> float:
        """The least delay between sending and starting playback at which a player never stalls:
        max over chunks of (arrival - the chunk's start time in the audio)."""
        starts = np.concatenate([[0], np.cumsum(self.chunk_samples)[:-1]]) / SAMPLE_RATE
        return float(max(arrival - start for arrival, start in zip(self.chunk_times, starts)))
