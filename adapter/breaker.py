"""Circuit breaker on the predictor: once the adapter has seen the predictor fail to answer, new
requests are refused at once (503 + Retry-After, naming the cause) instead of each waiting out
PREDICTOR_TIMEOUT_S on a predictor the service already reports as down. It closes as soon as the
predictor answers again.

What opens it: a watch probe (GET /v2/health/ready) with no answer within WATCH_TIMEOUT_S, and calls
that got no answer (connection refused or reset, a timeout, a stream that broke off). Any HTTP answer
closes it, whatever its status: a loading or draining predictor answers (and refuses work itself, at
once); a frozen or dead one does not. Requests already streaming are never cut by it: they keep
waiting for their own stream, within FIRST_CHUNK_TIMEOUT_S and CHUNK_GAP_TIMEOUT_S (settings.py).

The watch runs in the background from the app's start-up, so that a predictor frozen while the
adapter is idle is seen before the next request; it is also started whenever the breaker opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from contract.errors import ServiceError

log = logging.getLogger("adapter.breaker")
T = TypeVar("T")

# A probe unanswered for this long opens the breaker. The predictor answers its health route from its
# event loop, apart from the torch thread, in milliseconds even while it generates; a second of
# silence means a frozen process (SIGSTOP, a GPU hang, a long pause) or a dead network path.
WATCH_TIMEOUT_S = 1.0
# Between probes: while closed, a freeze is seen within WATCH_INTERVAL_S + WATCH_TIMEOUT_S; while
# open, probes come faster so that the breaker closes within a fraction of a second of recovery.
WATCH_INTERVAL_S = 1.0
OPEN_WATCH_INTERVAL_S = 0.25


class PredictorUnavailable(ServiceError):
    """503: the predictor cannot take the request now (relayed with Retry-After)."""

    def __init__(self, message: str = "predictor is unavailable"):
        super().__init__(503, message)


class Breaker:
    """`probe`: one health probe of the predictor, which reports through `answered()` / `failed()`."""

    def __init__(self, probe: Callable[[], Awaitable[None]], clock: Callable[[], float] = time.monotonic):
        self._probe = probe
        self._clock = clock
        self._cause: str | None = None
        self._opened_at = 0.0
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._opened = asyncio.Event()  # set while open: short calls in progress give up on it

    @property
    def is_open(self) -> bool:
        return self._cause is not None

    def check(self) -> None:
        """Raise PredictorUnavailable while open: the admission test of every new call."""
        if self._cause is not None:
            seconds = self._clock() - self._opened_at
            raise PredictorUnavailable(
                f"predictor is not answering ({self._cause}, {seconds:.1f} s ago); "
                "requests are refused until it answers again"
            )

    def failed(self, cause: str) -> None:
        """The predictor did not answer a call or a probe."""
        if self._cause is None:
            log.warning("predictor is not answering (%s): refusing new requests until it does", cause)
            self._cause = cause
            self._opened_at = self._clock()
            self._opened.set()
            self.watch()  # an open breaker needs probes to close again
            if self._wake is not None:  # probe again soon, at the open state's pace
                self._wake.set()

    def answered(self) -> None:
        """The predictor answered (any HTTP status, any stream event)."""
        if self._cause is not None:
            log.warning("predictor answers again after %.1f s: accepting requests", self._clock() - self._opened_at)
            self._cause = None
            self._opened.clear()

    async def unless_opened(self, work: Awaitable[T]) -> T:
        """Await a short call (a health check, an info request), unless the breaker opens first: then
        PredictorUnavailable at once rather than the call's own timeout. Streams never wait on this."""
        self.check()
        task = asyncio.ensure_future(work)
        opened = asyncio.ensure_future(self._opened.wait())
        try:
            await asyncio.wait({task, opened}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            self.check()
            raise PredictorUnavailable("predictor stopped answering during the call")  # closed again meanwhile
        return task.result()

    def watch(self) -> None:
        """Start the background probes, once, on the running loop."""
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._watch(self._wake))

    async def _watch(self, wake: asyncio.Event) -> None:
        while True:
            try:
                # The probe's request has its own WATCH_TIMEOUT_S; this also bounds finding the address.
                await asyncio.wait_for(self._probe(), 2 * WATCH_TIMEOUT_S)
            except TimeoutError:
                self.failed(f"a health probe did not finish within {2 * WATCH_TIMEOUT_S:g} s")
            except Exception:  # a bug in a probe must not end the watch silently
                log.exception("predictor watch probe failed")
            wake.clear()
            pause = OPEN_WATCH_INTERVAL_S if self.is_open else WATCH_INTERVAL_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), pause)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
