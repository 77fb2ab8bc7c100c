"""HTTP and WebSocket routes; each module exposes `router`."""

from fastapi import Request

from adapter.synthesis import AppContext


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx
