"""The Wyoming TCP listener, run for the lifetime of the adapter app (see adapter.app's lifespan)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from wyoming.server import AsyncTcpServer

from adapter.synthesis import AppContext
from adapter.wyoming.handler import TtsHandler

log = logging.getLogger("adapter.wyoming")


@asynccontextmanager
async def serve_wyoming(ctx: AppContext) -> AsyncIterator[None]:
    """Listens on HOST:WYOMING_PORT while the block runs (not at all when WYOMING_PORT is 0). On the way
    out, open connections are cancelled and waited for, so every synthesis has released its slot and
    its predictor stream before the predictor client closes."""
    port = ctx.settings.wyoming_port
    if not port:
        yield
        return
    running: set[asyncio.Task] = set()
    server = AsyncTcpServer(ctx.settings.host, port)
    try:
        await server.start(lambda reader, writer: TtsHandler(reader, writer, ctx, running))
    except OSError as exc:
        raise RuntimeError(
            f"cannot listen on WYOMING_PORT {port} ({exc.strerror}); set WYOMING_PORT=0 to disable"
        ) from None
    log.info("Wyoming TTS server on %s:%d", ctx.settings.host, port)
    try:
        yield
    finally:
        await server.stop()
        tasks = list(running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
