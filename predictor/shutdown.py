"""Graceful shutdown: on SIGTERM (or SIGINT) the predictor drains before kserve stops it.

kserve's ModelServer and the uvicorn server inside it both install signal handlers; uvicorn's run
while it serves and would close every connection at once, cutting streams mid-audio. So once
uvicorn has installed its handlers (at the app's start-up), ours replace them for the drain:

1. at the signal, readiness turns false (server and model ready, REST and gRPC) and new synthesis
   requests are refused with 503 + Retry-After (gRPC UNAVAILABLE);
2. requests in flight run to the end, for at most DRAIN_TIMEOUT_S;
3. past the bound, each remaining request ends at its next engine step with an error that says the
   server is shutting down (an SSE `error` event for streams);
4. then uvicorn's own handler runs (it closes idle connections and stops the HTTP server), and after
   it kserve's (it stops gRPC and unloads the models).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from contract.admission import RETRY_AFTER_S, SHUTTING_DOWN

logger = logging.getLogger(__name__)

# After the bound, each request stops at its next engine step (10 tokens, or one vocoder chunk):
# well under a second on a GPU, tens of seconds on a busy CPU. The process exits within
# DRAIN_TIMEOUT_S + this (usually + one step), then kserve's own stop.
CUT_GRACE_S = 30.0
_POLL_S = 0.05


class Drain:
    """Shutdown state shared by the admission check, readiness and the signal handler."""

    def __init__(self, timeout_s: float, in_flight: Callable[[], int] = lambda: 0):
        self.timeout_s = timeout_s
        self.in_flight = in_flight  # work admitted and not yet finished (the service's count)
        self.draining = False  # refuse new work, report not ready
        self.expired = False  # the bound has passed: work still running ends with an error
        self._task: asyncio.Task | None = None

    def install(self) -> None:
        """Take over SIGTERM/SIGINT from the server that is starting; call on the event loop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum, frame, previous=previous):
                loop.call_soon_threadsafe(self.begin, signum, previous)

            signal.signal(sig, handler)

    def begin(self, signum: int, then: Callable | None = None) -> None:
        """Start draining (idempotent; a second signal cuts the drain short); `then(signum, None)` runs after it."""
        if self._task is not None:
            logger.warning("signal %s during the drain: ending the requests still running now", signum)
            self.expired = True
            return
        self.draining = True
        logger.info("signal %s: draining, readiness is false (bound %s s)", signum, self.timeout_s)
        self._task = asyncio.get_running_loop().create_task(self._run(signum, then))

    async def _run(self, signum: int, then: Callable | None) -> None:
        await _until_idle(self.in_flight, self.timeout_s, stop=lambda: self.expired)
        if self.in_flight():
            logger.warning("drain bound passed with %d request(s) running: ending them", self.in_flight())
            self.expired = True
            await _until_idle(self.in_flight, CUT_GRACE_S)
        logger.info("drain finished; stopping the servers")
        if callable(then):
            then(signum, None)
        else:  # the default action: let the signal do what it would have done
            signal.signal(signum, signal.SIG_DFL if then is None else then)
            signal.raise_signal(signum)


def install_drain(app: FastAPI, drain: Drain) -> None:
    """Wire the drain into kserve's app: the handlers at start-up, and 503 + Retry-After for every
    POST while draining (kserve's own answer for a model that is not ready has no Retry-After)."""
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(the_app):
        async with original(the_app) as state:
            drain.install()  # uvicorn's handlers are in place by now: ours wrap them
            yield state

    app.router.lifespan_context = lifespan
    app.add_middleware(RefuseWhileDraining, drain=drain)


class RefuseWhileDraining:
    """Pure ASGI, so streaming responses pass through untouched."""

    def __init__(self, app, drain: Drain):
        self.app = app
        self.drain = drain

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and self.drain.draining:
            body = json.dumps({"error": SHUTTING_DOWN}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_S).encode()),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def wrap_server_readiness(dataplane, drain: Drain) -> None:
    """kserve's server readiness (REST /v2/health/ready and gRPC ServerReady) is always true;
    make it false while draining so that Kubernetes stops routing here."""
    original = dataplane.ready

    async def ready() -> bool:
        return not drain.draining and await original()

    dataplane.ready = ready


async def _until_idle(in_flight: Callable[[], int], seconds: float, stop: Callable[[], bool] = lambda: False) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while in_flight() and loop.time() < deadline and not stop():  # noqa: ASYNC110 (a plain counter, polled)
        await asyncio.sleep(_POLL_S)
