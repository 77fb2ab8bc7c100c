"""What the HTTP transports (the seed's POST /api/tts and OpenAI's /v1/audio/speech) share around a
synthesis: noticing a client that hangs up, and a streamed body that always ends its synthesis.
`ClientGone` is every transport's word for "nobody is listening any more"."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from adapter.errors import APIError

if TYPE_CHECKING:
    from adapter.synthesis import Synthesis

log = logging.getLogger("adapter.transport")
T = TypeVar("T")

# nginx's "client closed request": the status logged for an answer nobody was there to read.
CLIENT_CLOSED_REQUEST = 499


class ClientGone(Exception):
    """The client is no longer there to receive what we send."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
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


async def http_answer(
    request: Request,
    synthesis: Synthesis,
    whole: Callable[[bytes], Response],
    streamed: Callable[[], StreamingResponse],
) -> Response:
    """The answer of an HTTP route: `whole(data)` once all the audio is encoded, or for a streamed
    request `streamed()` once the first audio exists (so that early failures keep their status)."""
    if not synthesis.request.output.stream:
        try:
            async with synthesis:
                data = await unless_disconnected(request, synthesis.whole())
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED_REQUEST)  # nobody reads it
        return whole(data)
    try:
        await unless_disconnected(request, synthesis.start())
    except ClientGone:
        await synthesis.close("cancelled")
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    except BaseException:
        await synthesis.close("error")
        raise
    return streamed()


async def audio_bytes(synthesis: Synthesis) -> AsyncGenerator[bytes, None]:
    """The encoded stream as a body: each piece as soon as the encoder made it."""
    async for piece in synthesis.encoded():
        if piece.data:
            yield piece.data


class SynthesisStreamingResponse(StreamingResponse):
    """Streams a synthesis's body and always ends the synthesis (slot freed, upstream cancelled),
    even when the client disconnects mid-stream and the body iterator is abandoned."""

    def __init__(self, synthesis: Synthesis, content: AsyncGenerator[bytes, None], **kwargs: Any):
        super().__init__(content, **kwargs)
        self._content = content  # body_iterator, typed here as a generator that has aclose()
        self._synthesis = synthesis
        self._send_timeout_s = synthesis.client_send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self._synthesis:
            try:
                await super().__call__(scope, receive, send)
            finally:
                await self._content.aclose()

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
