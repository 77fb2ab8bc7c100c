"""One synthesis, shared by the HTTP and WebSocket routes: admission, the upstream stream, cleanup."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from adapter.errors import APIError
from adapter.limits import RETRY_AFTER_S, Slot, check_text_length
from adapter.predictor_client import AudioStream, StreamedAudio
from adapter.shutdown import CUT_AT_BOUND, SHUTTING_DOWN, Drain
from contract.errors import ServiceError
from contract.params import ParameterError, check_language
from contract.stream import DoneEvent

if TYPE_CHECKING:
    from adapter.limits import SlotPool
    from adapter.metrics import Metrics
    from adapter.predictor_client import PredictorClient
    from adapter.schemas import SayMessage, TTSRequest
    from adapter.settings import Settings
    from adapter.voice_library import VoiceLibrary

T = TypeVar("T")


@dataclass
class AppContext:
    settings: Settings
    predictor: PredictorClient
    voices: VoiceLibrary
    slots: SlotPool
    metrics: Metrics
    drain: Drain


def relay(exc: ServiceError) -> APIError:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status in (429, 503) else None
    return APIError(exc.status, exc.message, headers)


class Synthesis:
    """Admission happens in the constructor (cheap checks, then a slot), so a refusal costs
    nothing upstream; `close()` must follow on every path and is safe to repeat."""

    def __init__(
        self, ctx: AppContext, request: TTSRequest | SayMessage, transport: str, connection_voice: str | None = None
    ):
        if ctx.drain.draining:
            raise APIError(503, SHUTTING_DOWN, {"Retry-After": str(RETRY_AFTER_S)})
        check_text_length(request.text, ctx.settings.max_text_length)
        try:
            check_language(request.model, request.language_id)
        except ParameterError as exc:
            raise APIError(400, str(exc)) from None
        voice = ctx.voices.voice_for_request(request.voice.audio_prompt_path, connection_voice)
        self._slot: Slot | None = ctx.slots.try_acquire()
        self._ctx = ctx
        self._request = request
        self._transport = transport
        self._started = time.perf_counter()
        self._stream: AudioStream | None = None
        self.voice = voice
        self.outcome = "error"
        ctx.metrics.in_flight.inc()

    @property
    def client_send_timeout_s(self) -> float:
        return self._ctx.settings.client_send_timeout_s

    def parameters(self) -> dict:
        params = self._request.voice.sampling_parameters()
        if self.voice is not None:
            params["voice"] = self.voice
        # The seed's examples send language_id with every model; the predictor checks it on each.
        if self._request.language_id:
            params["language_id"] = self._request.language_id
        return params

    @property
    def summary(self) -> DoneEvent | None:
        """The predictor's done event (speech_tokens, duration_seconds) once its stream has ended."""
        return self._stream.done if self._stream is not None else None

    async def open(self) -> None:
        try:
            self._stream = await self._unless_cut(
                self._ctx.predictor.open_stream(
                    self._request.model, self._request.text, self.parameters(), incremental=self._request.audio.stream
                )
            )
        except ServiceError as exc:
            raise relay(exc) from None

    async def _unless_cut(self, work: Awaitable[T]) -> T:
        """Await `work`, unless the drain bound (adapter/shutdown.py) passes first: a synthesis must
        end then even while it waits for the predictor."""
        task = asyncio.ensure_future(work)
        cut = asyncio.ensure_future(self._ctx.drain.expired.wait())
        try:
            await asyncio.wait({task, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut.cancel()
            was_cut = not task.done()
            task.cancel()
        if was_cut:
            raise APIError(503, CUT_AT_BOUND)
        return task.result()

    async def chunks(self) -> AsyncGenerator[StreamedAudio, None]:
        if self._stream is None:
            await self.open()
        assert self._stream is not None  # open() sets it or raises
        metrics = self._ctx.metrics
        previous: float | None = None
        upstream = aiter(self._stream)
        try:
            while True:
                chunk = await self._unless_cut(anext(upstream, None))
                if chunk is None:
                    break
                now = time.perf_counter()
                if previous is None:
                    metrics.time_to_first_audio.labels(self._transport, self._request.model).observe(
                        now - self._started
                    )
                else:
                    metrics.inter_chunk_gap.labels(self._transport, self._request.model).observe(now - previous)
                previous = now
                yield chunk
        except ServiceError as exc:
            raise relay(exc) from None

    async def close(self, outcome: str | None = None, audio_seconds: float = 0.0) -> None:
        if self._slot is None:
            return
        if outcome:
            self.outcome = outcome
        slot, self._slot = self._slot, None
        try:
            if self._stream is not None:
                await self._stream.aclose()
        finally:
            slot.release()
            metrics = self._ctx.metrics
            metrics.in_flight.dec()
            metrics.synthesis.labels(self._transport, self._request.model, self.outcome).inc()
            if audio_seconds:
                metrics.audio_seconds.labels(self._transport, self._request.model).inc(audio_seconds)
