"""What every transport shares: admission (bounded work in flight), voice choice, running the engine
off the event loop (as scheduler tasks on the one torch thread, batched per variant), cancellation,
and metrics. The V2 model and the streaming route sit on top."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

from contract.admission import CUT_AT_BOUND, SHUTTING_DOWN
from contract.errors import ServiceError
from contract.params import ParameterError
from contract.variants import SAMPLE_RATE

from . import metrics
from .engine.engine import AudioChunk, ChatterboxEngine
from .engine.scheduler import END, Scheduler
from .engine.voices import BUILTIN_VOICE, VoiceError, voice_from_bytes, voice_from_folder
from .shutdown import Drain
from .torch_thread import TorchThread

logger = logging.getLogger(__name__)


MAX_UNREAD_CHUNKS = 4  # chunks a request may make ahead of its client before its vocoder waits


@dataclass
class StreamSummary:
    chunks: int = 0
    samples: int = 0
    speech_tokens: int = 0
    seed: int | None = None

    @property
    def duration_seconds(self) -> float:
        return self.samples / SAMPLE_RATE


class SynthesisService:
    def __init__(
        self,
        engine: ChatterboxEngine,
        max_concurrent_requests: int,
        torch_thread: TorchThread,
        drain_timeout_s: float = 30.0,
    ):
        self.engine = engine
        self.torch_thread = torch_thread
        self.capacity = max_concurrent_requests
        self._in_flight = 0
        self._lock = threading.Lock()
        self.drain = Drain(drain_timeout_s, in_flight=lambda: self._in_flight)
        self.scheduler = Scheduler(engine)
        torch_thread.set_ticker(self.scheduler.tick)

    def _admit(self, model: str) -> None:
        with self._lock:
            if self.drain.draining:
                metrics.REQUESTS.labels(model=model, outcome="rejected_shutdown").inc()
                raise ServiceError(503, SHUTTING_DOWN)
            if self._in_flight >= self.capacity:
                metrics.REQUESTS.labels(model=model, outcome="rejected_busy").inc()
                raise ServiceError(
                    429,
                    f"server busy: {self.capacity} synthesis requests already in flight (MAX_CONCURRENT_REQUESTS); retry shortly",
                )
            self._in_flight += 1
        metrics.IN_FLIGHT.labels(model=model).inc()

    def _release(self, model: str) -> None:
        with self._lock:
            self._in_flight -= 1
        metrics.IN_FLIGHT.labels(model=model).dec()

    async def stream(
        self,
        model: str,
        text: Any,
        raw_params: Mapping[str, Any],
        audio_prompt: bytes | None = None,
        summary: StreamSummary | None = None,
        incremental: bool = False,
    ) -> AsyncGenerator[AudioChunk, None]:
        """Yield audio chunks in order: per text piece, or with `incremental` as tokens arrive.
        Errors before the first chunk are ServiceError (4xx/429)."""
        started = time.perf_counter()
        summary = summary if summary is not None else StreamSummary()
        if model not in self.engine.variants:
            raise ServiceError(404, f"model '{model}' is not loaded (loaded: {', '.join(self.engine.variants)})")
        self._admit(model)
        cancelled = threading.Event()
        # The slot frees once both the stream is over here and the task is gone from the torch thread.
        holders = [2]

        def let_go() -> None:
            with self._lock:
                holders[0] -= 1
                last = holders[0] == 0
            if last:
                self._release(model)

        started_task = False
        outcome = "error"
        try:
            request = await self.torch_thread.run(self._prepare, model, text, dict(raw_params), audio_prompt)
            summary.seed = request.seed
            loop = asyncio.get_running_loop()
            items: asyncio.Queue = asyncio.Queue()
            # Chunks sent (written by the torch thread only) and read (by the event loop only).
            sent, read = [0], [0]

            def deliver(item) -> None:  # called on the torch thread
                sent[0] += 1
                with contextlib.suppress(RuntimeError):  # the event loop is gone: so is the client
                    loop.call_soon_threadsafe(items.put_nowait, item)

            await self.torch_thread.run(
                self.scheduler.start,
                request,
                incremental,
                cancelled.is_set,
                deliver,
                let_go,
                lambda: sent[0] - read[0] < MAX_UNREAD_CHUNKS,
            )
            started_task = True
            last = None
            while True:
                item = await items.get()
                read[0] += 1
                if item is END:
                    break
                if isinstance(item, BaseException):
                    raise item
                if self.drain.expired:
                    outcome = "shutdown"
                    raise ServiceError(503, CUT_AT_BOUND)
                now = time.perf_counter()
                if last is None:
                    metrics.TIME_TO_FIRST_AUDIO.labels(model=model).observe(now - started)
                else:
                    metrics.INTER_CHUNK_GAP.labels(model=model).observe(now - last)
                last = now
                summary.chunks += 1
                summary.samples += len(item.samples)
                summary.speech_tokens += item.speech_tokens
                yield item
            outcome = "ok"
            elapsed = time.perf_counter() - started
            metrics.AUDIO_SECONDS.labels(model=model).inc(summary.duration_seconds)
            metrics.SPEECH_TOKENS.labels(model=model).inc(summary.speech_tokens)
            if summary.samples:
                metrics.REAL_TIME_FACTOR.labels(model=model).observe(elapsed / summary.duration_seconds)
        except ServiceError:
            outcome = "shutdown" if outcome == "shutdown" else "bad_request"
            raise
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            # The scheduler stops a cancelled task at its next switch point; the slot frees when
            # it is gone (a request that never became a task has nothing to wait for).
            cancelled.set()
            metrics.REQUESTS.labels(model=model, outcome=outcome).inc()
            if not started_task:
                let_go()
            let_go()

    def _prepare(self, model: str, text: Any, raw_params: dict, audio_prompt: bytes | None):
        try:
            voice_name = raw_params.pop("voice", None)
            if voice_name is not None and audio_prompt is not None:
                raise ServiceError(400, "send either the voice parameter or the audio_prompt input, not both")
            if audio_prompt is not None:
                voice = voice_from_bytes(audio_prompt)
            elif voice_name not in (None, ""):
                if not isinstance(voice_name, str):
                    raise ServiceError(400, "voice: must be a file name in the voice folder")
                voice = voice_from_folder(self.engine.settings.voices_dir, voice_name)
            else:
                voice = BUILTIN_VOICE
            return self.engine.prepare(model, text, raw_params, voice)
        except (ParameterError, VoiceError) as exc:
            raise ServiceError(400, str(exc)) from None
