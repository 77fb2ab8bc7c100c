"""Admission control: one pool of synthesis slots shared by HTTP and WebSocket work."""

from __future__ import annotations

from adapter.errors import APIError

RETRY_AFTER_S = 1
# A WebSocket message is a small JSON command (text up to MAX_TEXT_LENGTH); larger frames close with 1009.
WS_MAX_MESSAGE_BYTES = 1024 * 1024
# The request line plus all headers; a larger head is refused with 400 before any route runs.
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


def check_text_length(text: str, limit: int) -> None:
    if len(text) > limit:
        raise APIError(413, f"text is {len(text)} characters; the limit is {limit} (MAX_TEXT_LENGTH)")
