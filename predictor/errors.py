"""Handing a contract.errors.ServiceError to kserve: gRPC needs a status code, REST an HTTP status."""

from __future__ import annotations

from typing import cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException

from contract.admission import RETRY_AFTER_S
from contract.errors import ServiceError

GRPC_CODES = {
    400: StatusCode.INVALID_ARGUMENT,
    404: StatusCode.NOT_FOUND,
    413: StatusCode.OUT_OF_RANGE,
    429: StatusCode.RESOURCE_EXHAUSTED,
    503: StatusCode.UNAVAILABLE,
}


def for_transport(exc: ServiceError, from_grpc: bool) -> Exception:
    """What to raise out of a kserve model: kserve's gRPC interceptor maps GrpcException codes
    itself; over REST the ServiceError reaches the handler `install_rest_handler` adds."""
    if from_grpc:
        return GrpcException(details=exc.message, status_code=GRPC_CODES.get(exc.status, StatusCode.INVALID_ARGUMENT))
    return exc


def describe_validation_errors(errors: list[dict]) -> str:
    """FastAPI's validation errors as one line naming the fields. kserve's infer body is a union of
    the JSON request and raw bytes; the bytes branch's complaint says nothing useful and is dropped."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "InferenceRequest")]
        if loc and loc[0] == "bytes":
            continue
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts[:5]) or "malformed request body"


def install_rest_handler(app: FastAPI) -> None:
    """ServiceError -> its status, and a body FastAPI cannot validate -> 400, both with kserve's
    error shape {"error": "..."} (what V2 clients such as tritonclient read)."""

    # Starlette types a handler as taking any Exception; each is registered for its own class only.
    async def service_error_handler(_: Request, exc: Exception) -> JSONResponse:
        error = cast(ServiceError, exc)
        retry = {"Retry-After": str(RETRY_AFTER_S)} if error.status in (429, 503) else None
        return JSONResponse(status_code=error.status, content={"error": error.message}, headers=retry)

    async def validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
        errors = cast(RequestValidationError, exc).errors()
        return JSONResponse(status_code=400, content={"error": describe_validation_errors(list(errors))})

    app.add_exception_handler(ServiceError, service_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
