"""One synthesis, for every transport: admission, the predictor's streams (one per segment), the
join of the segments, the encoder, the outcome, the metrics and the cleanup.

    synthesis = Synthesis(ctx, request)  # admission: cheap checks, then a slot; a refusal costs nothing
    async with synthesis:                # ends it on every path: slot freed, upstream closed, metrics
        await synthesis.start()          # optional: the first audio, so early failures keep their status
        async for piece in synthesis.encoded(): ...   # streamed: encoded pieces as they are made
        data = await synthesis.whole()                # or the whole answer at once

A transport whose answer outlives its handler (a streamed HTTP body) enters the synthesis where the
body is sent (adapter/transport.py); `close()` ends one that was never entered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np

from adapter.audio import Rechunker, chunk_bytes_for
from adapter.codecs import Encoder
from adapter.errors import APIError
from adapter.joining import SegmentJoiner, SegmentTiming
from adapter.limits import Slot, check_text_length
from adapter.predictor_client import AudioStream, StreamedAudio
from adapter.transport import ClientGone
from contract.admission import CUT_AT_BOUND, RETRY_AFTER_S, SHUTTING_DOWN
from contract.errors import ServiceError
from contract.params import ParameterError, check_language
from contract.tags import tag_problem, tags_in
from contract.variants import SAMPLES_PER_TOKEN

if TYPE_CHECKING:
    from adapter.limits import SlotPool
    from adapter.metrics import Metrics
    from adapter.predictor_client import PredictorClient
    from adapter.request import Segment, SynthesisRequest
    from adapter.settings import Settings
    from adapter.shutdown import Drain
    from adapter.voice_library import VoiceLibrary

T = TypeVar("T")

# A script longer than this is refused (each segment is its own generation on the predictor).
MAX_SEGMENTS = 64


@dataclass
class AppContext:
    settings: Settings
    predictor: PredictorClient
    voices: VoiceLibrary
    slots: SlotPool
    metrics: Metrics
    drain: Drain


class EncodedPiece(NamedTuple):
    data: bytes  # the first piece starts with the format's stream header (streamed WAV)
    last: bool  # nothing follows (it may be empty: a transport that flags its last message needs it)


def relay(exc: ServiceError) -> APIError:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status in (429, 503) else None
    return APIError(exc.status, exc.message, headers)


def _segment_error(request: SynthesisRequest, index: int, exc: ServiceError) -> APIError:
    """A script's error names the segment; a plain text's reads as it always did."""
    if len(request.segments) == 1 and not request.scripted:
        return exc if isinstance(exc, APIError) else APIError(exc.status, exc.message)
    return APIError(exc.status, f"segments[{index}]: {exc.message}", getattr(exc, "headers", None))


class Synthesis:
    def __init__(self, ctx: AppContext, request: SynthesisRequest):
        if ctx.drain.draining:
            raise APIError(503, SHUTTING_DOWN, {"Retry-After": str(RETRY_AFTER_S)})
        self._check_script(ctx, request)
        self.voices = [self._voice(ctx, request, i) for i in range(len(request.segments))]
        out = request.output
        # Made before the slot: an encoder that cannot be built must not cost one.
        self.encoder = Encoder(out.format, out.sample_rate, streaming=out.stream, speed=out.speed)
        self._slot: Slot | None = ctx.slots.try_acquire()
        ctx.metrics.in_flight.inc()
        self._ctx = ctx
        self.request = request
        self._started = time.perf_counter()
        self._stream: AudioStream | None = None
        self._audio: AsyncGenerator[StreamedAudio, None] | None = None
        self._first: StreamedAudio | None = None
        self._joiner = SegmentJoiner(shape=len(request.segments) > 1)
        self.speech_tokens = 0  # from the predictor's done events
        self.generated_samples = 0
        self.completed = False  # the whole answer was produced: the outcome is "ok"

    @staticmethod
    def _check_script(ctx: AppContext, request: SynthesisRequest) -> None:
        limit = ctx.settings.max_text_length
        if len(request.segments) == 1 and not request.scripted:
            check_text_length(request.segments[0].text, limit)
        else:
            if len(request.segments) > MAX_SEGMENTS:
                raise APIError(413, f"segments[{MAX_SEGMENTS}]: a script has at most {MAX_SEGMENTS} segments")
            total = 0
            for index, segment in enumerate(request.segments):
                total += len(segment.text)
                if total > limit:
                    raise APIError(
                        413,
                        f"segments[{index}]: the text of all segments together is {request.text_length} "
                        f"characters, over the limit of {limit} (MAX_TEXT_LENGTH) from this segment on",
                    )
        for index, segment in enumerate(request.segments):
            try:
                check_language(segment.model, segment.language_id)
            except ParameterError as exc:
                raise _segment_error(request, index, APIError(400, str(exc))) from None

    @staticmethod
    def _voice(ctx: AppContext, request: SynthesisRequest, index: int) -> str | None:
        segment = request.segments[index]
        try:
            if segment.voice and segment.voice_named:
                return ctx.voices.resolve_named(segment.voice)
            return ctx.voices.voice_for_request(segment.voice, request.connection_voice)
        except APIError as exc:
            raise _segment_error(request, index, exc) from None

    # --- the lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Synthesis:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close(outcome_of(exc, self.completed))

    async def close(self, outcome: str = "cancelled") -> None:
        """Idempotent: the first call frees the slot, closes the upstream stream and counts the outcome."""
        if self._slot is None:
            return
        slot, self._slot = self._slot, None
        try:
            if self._audio is not None:
                try:
                    await self._audio.aclose()
                except RuntimeError:  # still running in a task being cancelled: it unwinds by itself
                    pass
            if self._stream is not None:
                await self._stream.aclose()
        finally:
            slot.release()
            metrics, transport, model = self._ctx.metrics, self.request.transport, self.request.model
            metrics.in_flight.dec()
            metrics.synthesis.labels(transport, model, outcome).inc()
            if self.encoder.duration_seconds:
                metrics.audio_seconds.labels(transport, model).inc(self.encoder.duration_seconds)

    @property
    def client_send_timeout_s(self) -> float:
        return self._ctx.settings.client_send_timeout_s

    @property
    def duration_seconds(self) -> float:
        return self.encoder.duration_seconds

    @property
    def timings(self) -> list[SegmentTiming] | None:
        """Each segment's place in the output (after any speed change), for scripted requests only."""
        if not self.request.scripted:
            return None
        speed = self.request.output.speed
        return [SegmentTiming(t.index, t.start_seconds / speed, t.end_seconds / speed) for t in self._joiner.timings]

    # --- the audio -----------------------------------------------------------------------

    async def start(self) -> None:
        """Wait for the first audio (or the first failure, with its own status) before answering."""
        if self._audio is None:
            self._audio = self._joined()
            self._first = await anext(self._audio, None)

    async def _samples(self) -> AsyncIterator[StreamedAudio]:
        await self.start()
        assert self._audio is not None  # start() made it
        if self._first is not None:
            first, self._first = self._first, None
            yield first
            async for chunk in self._audio:
                yield chunk

    async def _check_tags(self) -> None:
        """Refuse a [tag] a segment's model does not know before any segment is spoken: the
        predictor refuses it too, but only when that segment's turn comes, mid-stream."""
        segments = self.request.segments
        if not any(tags_in(segment.text) for segment in segments):
            return  # the usual text costs no call
        try:
            known = (await self._ctx.predictor.info()).get("tags")
        except ServiceError:
            return  # the first segment's own call to the predictor says what is wrong
        if not isinstance(known, dict):
            return  # a predictor from before tags: it checks each segment itself
        for index, segment in enumerate(segments):
            if segment.model not in known:
                continue  # not loaded: the predictor's 404 names it
            problem = tag_problem(segment.text, segment.model, known[segment.model])
            if problem:
                raise _segment_error(self.request, index, APIError(400, problem))

    async def _joined(self) -> AsyncGenerator[StreamedAudio, None]:
        """Every segment's audio in order, joined: the last chunk says final."""
        await self._check_tags()
        joiner, segments = self._joiner, self.request.segments
        for index, segment in enumerate(segments):
            last_segment = index == len(segments) - 1
            joiner.begin(index)
            async for chunk in self._generate(index, segment):
                out = joiner.feed(chunk.samples)
                if chunk.final:
                    out = np.concatenate([out, joiner.end(segment.pause_ms, last_segment)])
                    yield StreamedAudio(out, last_segment)
                elif out.size:
                    yield StreamedAudio(out, False)

    async def _generate(self, index: int, segment: Segment) -> AsyncGenerator[StreamedAudio, None]:
        try:
            self._stream = await self._unless_cut(
                self._ctx.predictor.open_stream(
                    segment.model, segment.text, self._parameters(index), incremental=self.request.output.stream
                )
            )
            upstream = aiter(self._stream)
            previous: float | None = None
            metrics, transport, model = self._ctx.metrics, self.request.transport, self.request.model
            while True:
                chunk = await self._unless_cut(anext(upstream, None))
                if chunk is None:
                    break
                now = time.perf_counter()
                if previous is None and index == 0:
                    metrics.time_to_first_audio.labels(transport, model).observe(now - self._started)
                elif previous is not None:
                    metrics.inter_chunk_gap.labels(transport, model).observe(now - previous)
                previous = now
                self.generated_samples += chunk.samples.size
                yield chunk
            done = self._stream.done
            self.speech_tokens += done.speech_tokens if done is not None else 0
        except ServiceError as exc:
            raise _segment_error(self.request, index, relay(exc)) from None
        finally:
            if self._stream is not None:
                await self._stream.aclose()

    def _parameters(self, index: int) -> dict[str, Any]:
        segment = self.request.segments[index]
        params = dict(segment.parameters)
        if self.voices[index] is not None:
            params["voice"] = self.voices[index]
        # The seed's examples send language_id with every model; the predictor checks it on each.
        if segment.language_id:
            params["language_id"] = segment.language_id
        return params

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

    # --- the two ways out ------------------------------------------------------------------

    async def encoded(self) -> AsyncGenerator[EncodedPiece, None]:
        """The encoded stream, each piece as soon as it exists; plain PCM is cut into pieces of
        `chunk_size_ms` (compressed formats go out as encoded: whole frames or pages)."""
        encoder, out = self.encoder, self.request.output
        rechunker = (
            Rechunker(chunk_bytes_for(encoder.sample_rate, out.chunk_size_ms))
            if out.chunk_size_ms and encoder.rechunkable
            else None
        )
        header = encoder.stream_header()
        ended = False
        async for chunk in self._samples():
            ended = chunk.final
            data = encoder.encode(chunk.samples, last=chunk.final)
            if rechunker is None:
                pieces = [data] if data else []
            else:
                pieces = list(rechunker.feed(data))
                if chunk.final:
                    pieces += rechunker.finish()
            if chunk.final and not pieces:
                pieces = [b""]
            for i, piece in enumerate(pieces):
                if header:
                    piece, header = header + piece, b""
                yield EncodedPiece(piece, chunk.final and i == len(pieces) - 1)
        if not ended:  # no chunk said final: still end the encoder's stream properly
            data = encoder.encode(np.zeros(0, dtype=np.float32), last=True)
            yield EncodedPiece(header + data, True)
        self.completed = True

    async def whole(self) -> bytes:
        """All the audio, encoded at once (exact headers), once generated."""
        pieces = [chunk.samples async for chunk in self._samples()]
        audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        data = await asyncio.to_thread(self.encoder.encode, audio, True)  # compressing a long text takes a while
        self.completed = True
        return data

    def usage_tokens(self) -> int:
        """Speech tokens generated (the predictor's count; estimated from the audio if it gave none)."""
        return self.speech_tokens or self.generated_samples // SAMPLES_PER_TOKEN


def outcome_of(exc: BaseException | None, completed: bool) -> str:
    """The `outcome` label of a synthesis that ended with `exc` (None: it returned)."""
    if exc is None:
        return "ok" if completed else "error"
    if isinstance(exc, ClientGone | asyncio.CancelledError):
        return "cancelled"
    return "error"
