"""Handing a contract.errors.ServiceError to kserve: gRPC needs a status code, REST an HTTP status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException

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


def install_rest_handler(app: FastAPI) -> None:
    """ServiceError -> its status, with kserve's error body shape {"error": "..."}."""

    async def service_error_handler(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"error": exc.message})

    app.add_exception_handler(ServiceError, service_error_handler)
