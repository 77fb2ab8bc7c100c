"""Admission control: one pool of synthesis slots shared by HTTP and WebSocket work."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from adapter.errors import APIError, error_body
from contract.admission import RETRY_AFTER_S, text_length_problem

# A WebSocket message is a small JSON command (text up to MAX_TEXT_LENGTH); larger frames close with 1009.
WS_MAX_MESSAGE_BYTES = 1024 * 1024
# All request headers together. A head that arrives in pieces is capped by h11 (400) while it is
# read; one that arrives whole is refused by HeaderSizeLimit (431) before any route runs.
MAX_HEADER_BYTES = 64 * 1024


class Slot:
    """A held slot; release() is idempotent so every exit path may call it."""

    def __init__(self, pool: SlotPool):
        self._pool = pool
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._pool._in_use -= 1


class SlotPool:
    """Non-blocking: a request that finds no free slot is refused at once (429), never queued,
    so clients see back-pressure immediately instead of waiting behind long generations."""

    def __init__(self, size: int):
        self.size = size
        self._in_use = 0

    @property
    def in_use(self) -> int:
        return self._in_use

    def try_acquire(self) -> Slot:
        # Single event loop: the check and the increment cannot interleave with another task.
        if self._in_use >= self.size:
            raise APIError(
                429,
                f"all {self.size} synthesis slots are busy (MAX_CONCURRENT_REQUESTS); retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self._in_use += 1
        return Slot(self)


def check_text_length(text: str, limit: int, what: str = "text") -> None:
    too_long = text_length_problem(len(text), limit, what)
    if too_long:
        raise APIError(413, too_long)


class HeaderSizeLimit:
    """Pure ASGI middleware: 431 for requests whose headers add up to more than `limit` bytes."""

    def __init__(self, app: ASGIApp, limit: int = MAX_HEADER_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.limit:
                message = f"request headers are {size} bytes; the limit is {self.limit}"
                if scope["type"] == "websocket":  # refuses the handshake (HTTP 403)
                    await send({"type": "websocket.close", "code": 1009, "reason": message[:120]})
                    return
                body = json.dumps(error_body(431, message)).encode()
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 431, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
