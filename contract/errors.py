"""The one error type both services raise for a client-visible failure."""

from __future__ import annotations


class ServiceError(Exception):
    """A failure the client should see: `status` is the HTTP status, `message` says what is wrong.

    The predictor maps `status` to a gRPC code where it hands the error to kserve; the adapter
    relays it (or turns it into 502/503/504 when the predictor itself failed)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message
