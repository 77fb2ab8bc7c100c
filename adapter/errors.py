"""One error shape for every route: {"error": {"code": <http status>, "message": "..."}}."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contract.errors import ServiceError

log = logging.getLogger("adapter")


# pydantic error types that mean a malformed body rather than a value out of range.
BAD_REQUEST_ERROR_TYPES = ("json_invalid", "unpaired_surrogate")


class APIError(ServiceError):
    """A ServiceError with response headers (Retry-After): a client-visible response (HTTP) or error
    message (WebSocket)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status, message)
        self.headers = headers or {}


def error_body(code: int | str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def describe_validation_errors(errors: Sequence[Mapping[str, Any]], ranges: dict[str, str]) -> tuple[int, str]:
    """Turn pydantic's error list into (status, one readable sentence naming the fields)."""
    parts = []
    status = 422
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form")]
        if err.get("type") == "json_invalid":
            status = 400
            parts.append(f"malformed JSON body: {err.get('ctx', {}).get('error', err.get('msg'))}")
            continue
        if err.get("type") in BAD_REQUEST_ERROR_TYPES:
            status = 400
            if not loc:  # a whole-body check: its message names the field
                parts.append(str(err.get("msg", "malformed body")))
                continue
        field = ".".join(loc) or "body"
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        # Pydantic's own range messages give one bound; the documented range is more useful.
        allowed = ranges.get(loc[-1]) if loc else None
        if allowed and err.get("type", "").startswith(("greater", "less")):
            msg = f"{msg} (allowed range {allowed})"
        parts.append(f"{field}: {msg}")
    return status, "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI, ranges: dict[str, str]) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = describe_validation_errors(list(exc.errors()), ranges)
        return error_response(status, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route for {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Details go to the log only; clients never see a stack trace.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error")
