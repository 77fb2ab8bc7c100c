"""Graceful shutdown: on SIGTERM (or SIGINT) the adapter drains before uvicorn stops it.

Uvicorn alone closes every WebSocket at once (1012) and lets HTTP streams run unbounded. Here:

1. at the signal, /health answers 503 and new syntheses are refused with 503 + Retry-After (HTTP)
   or an `error` message (WebSocket); new WebSocket connections get that error and close 1012;
2. syntheses in flight run to the end (`done`), for at most DRAIN_TIMEOUT_S;
3. past the bound, each one still running ends: a WebSocket `error` message that says the server
   is shutting down, an HTTP stream as a failed transfer (its chunked body is never terminated);
4. then uvicorn's own shutdown runs: WebSockets close with 1012, idle connections close.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn

from contract.admission import CUT_AT_BOUND, SHUTTING_DOWN

__all__ = ["CUT_AT_BOUND", "SHUTTING_DOWN", "Drain", "DrainingServer"]

log = logging.getLogger("adapter.shutdown")

# After the bound, each synthesis ends at once (it waits on the predictor, never on a computation).
_CUT_GRACE_S = 5.0
# What is left for uvicorn once the drain is over: flushing the last messages and close frames.
UVICORN_GRACE_S = 5
_POLL_S = 0.05


class Drain:
    """Shutdown state read by admission (synthesis.py), /health and the WebSocket route."""

    def __init__(self, timeout_s: float, in_flight: Callable[[], int]):
        self.timeout_s = timeout_s
        self.in_flight = in_flight
        self.draining = False
        self.expired = asyncio.Event()  # set at the bound: syntheses still running end now
        self._task: asyncio.Task | None = None

    def begin(self, signum: int, then: Callable[[int], None]) -> None:
        if self._task is not None:
            log.warning("signal %s during the drain: ending the syntheses still running now", signum)
            self.expired.set()
            return
        self.draining = True
        log.info("signal %s: draining (bound %s s, %d synthesis running)", signum, self.timeout_s, self.in_flight())
        self._task = asyncio.get_running_loop().create_task(self._run(signum, then))

    async def _run(self, signum: int, then: Callable[[int], None]) -> None:
        await _until_idle(self.in_flight, self.timeout_s, stop=lambda: self.expired.is_set())
        if self.in_flight():
            log.warning("drain bound passed with %d synthesis running: ending them", self.in_flight())
            self.expired.set()
            await _until_idle(self.in_flight, _CUT_GRACE_S)
        log.info("drain finished; stopping the server")
        then(signum)


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose signal handler drains first, then shuts down as uvicorn would."""

    def __init__(self, config: uvicorn.Config, drain: Drain):
        super().__init__(config)
        self.drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        self._loop.call_soon_threadsafe(
            self.drain.begin, sig, lambda signum: super(DrainingServer, self).handle_exit(signum, None)
        )


async def _until_idle(in_flight: Callable[[], int], seconds: float, stop: Callable[[], bool] = lambda: False) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while in_flight() and loop.time() < deadline and not stop():  # noqa: ASYNC110 (a plain counter, polled)
        await asyncio.sleep(_POLL_S)
