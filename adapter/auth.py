"""Bearer-token authentication (active only when API_TOKEN is set)."""

from __future__ import annotations

import hmac

from fastapi import Request, WebSocket, WebSocketException
from starlette.status import WS_1008_POLICY_VIOLATION

from adapter.errors import APIError

_REASON = "missing or invalid API token"


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _matches(expected: str, given: str | None) -> bool:
    # Constant-time comparison, so response timing does not reveal how much of a guess was right.
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


async def require_token(request: Request) -> None:
    expected = request.app.state.ctx.settings.api_token
    if expected and not _matches(expected, _bearer(request.headers.get("authorization"))):
        raise APIError(401, _REASON, headers={"WWW-Authenticate": "Bearer"})


async def require_ws_token(websocket: WebSocket) -> None:
    """Browsers cannot set headers on a WebSocket, hence the ?token= alternative.

    The handshake is accepted before closing so the client sees close code 1008 (policy
    violation); a refused handshake would only show up as an HTTP 403.
    """
    expected = websocket.app.state.ctx.settings.api_token
    if not expected:
        return
    given = _bearer(websocket.headers.get("authorization")) or websocket.query_params.get("token")
    if not _matches(expected, given):
        await websocket.accept()
        raise WebSocketException(code=WS_1008_POLICY_VIOLATION, reason=_REASON)
