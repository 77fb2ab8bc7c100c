"""One synthesis, shared by the HTTP and WebSocket routes: admission, the upstream stream, cleanup."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapter.errors import APIError
from adapter.limits import RETRY_AFTER_S, Slot, check_text_length
from adapter.predictor_client import AudioStream, StreamedAudio
from contract.errors import ServiceError
from contract.params import ParameterError, check_language

if TYPE_CHECKING:
    from adapter.limits import SlotPool
    from adapter.metrics import Metrics
    from adapter.predictor_client import PredictorClient
    from adapter.schemas import _TextRequest
    from adapter.settings import Settings
    from adapter.voice_library import VoiceLibrary


@dataclass
class AppContext:
    settings: Settings
    predictor: PredictorClient
    voices: VoiceLibrary
    slots: SlotPool
    metrics: Metrics


def relay(exc: ServiceError) -> APIError:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status == 429 else None
    return APIError(exc.status, exc.message, headers)


class Synthesis:
    """Admission happens in the constructor (cheap checks, then a slot), so a refusal costs
    nothing upstream; `close()` must follow on every path and is safe to repeat."""

    def __init__(self, ctx: AppContext, request: _TextRequest, transport: str, connection_voice: str | None = None):
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

    def parameters(self) -> dict:
        params = self._request.voice.sampling_parameters()
        if self.voice is not None:
            params["voice"] = self.voice
        # The seed's examples send language_id with every model; the predictor checks it on each.
        if self._request.language_id:
            params["language_id"] = self._request.language_id
        return params

    @property
    def summary(self) -> dict | None:
        """The predictor's done event (speech_tokens, duration_seconds) once its stream has ended."""
        return self._stream.done if self._stream is not None else None

    async def open(self) -> None:
        try:
            self._stream = await self._ctx.predictor.open_stream(
                self._request.model, self._request.text, self.parameters(), incremental=self._request.audio.stream
            )
        except ServiceError as exc:
            raise relay(exc) from None

    async def chunks(self) -> AsyncIterator[StreamedAudio]:
        if self._stream is None:
            await self.open()
        metrics = self._ctx.metrics
        previous: float | None = None
        try:
            async for chunk in self._stream:
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
