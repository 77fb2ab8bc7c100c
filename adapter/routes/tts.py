"""POST /api/tts: whole files, or chunked transfer as the audio is generated."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from adapter.audio import Rechunker, chunk_bytes_for
from adapter.codecs import FORMATS, Encoder, check_output
from adapter.errors import APIError
from adapter.routes import get_ctx
from adapter.schemas import ErrorBody, TTSRequest
from adapter.synthesis import AppContext, Synthesis

log = logging.getLogger("adapter.tts")
router = APIRouter(tags=["tts"])
T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 429, 502, 503, 504)
}
_AUDIO: dict[str, dict[str, Any]] = {fmt.media_type: {} for fmt in FORMATS.values()}


class ClientGone(Exception):
    pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it if the client hangs up first (Starlette would not notice)."""
    task = asyncio.ensure_future(work)

    async def wait_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(wait_disconnect())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (watcher, task):
            if not pending.done():
                pending.cancel()
        # Let the cancelled work unwind before the caller closes what it was using.
        await asyncio.wait({task, watcher})
    if task.cancelled():
        raise ClientGone()
    return task.result()


def _audio_headers(fmt: str, rate: int) -> dict[str, str]:
    return {"X-Audio-Format": fmt, "X-Sample-Rate": str(rate), "X-Audio-Channels": "1"}


class SynthesisStreamingResponse(StreamingResponse):
    """Streams a synthesis and always ends it (slot freed, upstream cancelled), even when the
    client disconnects mid-stream and the body iterator is abandoned."""

    def __init__(self, synthesis: Synthesis, encoder: Encoder, content: AsyncGenerator[bytes, None], **kwargs):
        super().__init__(content, **kwargs)
        self._content = content  # body_iterator, typed here as a generator that has aclose()
        self._synthesis = synthesis
        self._encoder = encoder
        self._send_timeout_s = synthesis.client_send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "cancelled"
        try:
            await super().__call__(scope, receive, send)
            outcome = self._synthesis.outcome
        finally:
            await self._content.aclose()
            await self._synthesis.close(outcome, self._encoder.duration_seconds)

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                # A client that stops reading makes send() wait once the socket buffers are full:
                # past the timeout it is dropped, which frees its slot and caps what is buffered.
                message = {"type": "http.response.body", "body": chunk, "more_body": True}
                await asyncio.wait_for(send(message), self._send_timeout_s)
        except TimeoutError:
            log.warning("HTTP client read nothing for %s s: dropping it", self._send_timeout_s)
            return
        except APIError as exc:
            # Headers are gone already; leaving the chunked body unterminated makes the client
            # see a failed transfer instead of a silently truncated file.
            log.warning("stream aborted after it started: %s %s", exc.status, exc.message)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self._synthesis.outcome = "ok"


@router.post(
    "/api/tts",
    summary="Synthesise speech",
    response_class=Response,
    responses={200: {"content": _AUDIO, "description": "Audio in audio.format (see X-Sample-Rate)"}, **_ERRORS},
)
async def tts(body: TTSRequest, request: Request, ctx: AppContext = Depends(get_ctx)) -> Response:
    check_output(body.audio.format, body.audio.sample_rate)
    synthesis = Synthesis(ctx, body, "http")
    fmt, rate = body.audio.format, body.audio.sample_rate
    try:
        if body.audio.stream:
            return await _streaming(request, synthesis, body)
        return await _whole(request, synthesis, fmt, rate)
    except ClientGone:
        await synthesis.close("cancelled")
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    except BaseException:
        await synthesis.close("error")
        raise


async def _whole(request: Request, synthesis: Synthesis, fmt: str, rate: int) -> Response:
    async def collect() -> list[np.ndarray]:
        return [chunk.samples async for chunk in synthesis.chunks()]

    pieces = await _unless_disconnected(request, collect())
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    encoder = Encoder(fmt, rate, streaming=False)
    data = await asyncio.to_thread(encoder.encode, audio, True)  # compressing a long text takes a while
    duration = encoder.duration_seconds
    await synthesis.close("ok", duration)
    headers = {**_audio_headers(fmt, rate), "X-Audio-Duration-Seconds": f"{duration:.3f}"}
    return Response(data, media_type=encoder.media_type, headers=headers)


async def _streaming(request: Request, synthesis: Synthesis, body: TTSRequest) -> Response:
    fmt, rate = body.audio.format, body.audio.sample_rate
    chunks = synthesis.chunks()
    # Waiting for the first chunk before answering lets early failures keep their HTTP status.
    first = await _unless_disconnected(request, anext(chunks, None))
    encoder = Encoder(fmt, rate)
    # Compressed output goes out as encoded (whole frames/pages); only PCM can be cut anywhere.
    chunk_size_ms = body.audio.chunk_size_ms
    rechunker = Rechunker(chunk_bytes_for(rate, chunk_size_ms)) if chunk_size_ms and encoder.rechunkable else None

    async def content() -> AsyncGenerator[bytes, None]:
        try:
            header = encoder.stream_header()
            if header:
                yield header
            chunk = first
            while chunk is not None:
                data = encoder.encode(chunk.samples, last=chunk.final)
                if rechunker is None:
                    if data:
                        yield data
                else:
                    for piece in rechunker.feed(data):
                        yield piece
                chunk = await anext(chunks, None)
            if rechunker is not None:
                for piece in rechunker.finish():
                    yield piece
        finally:
            await chunks.aclose()

    return SynthesisStreamingResponse(
        synthesis, encoder, content(), media_type=encoder.media_type, headers=_audio_headers(fmt, rate)
    )
