"""Admission facts both services state to clients the same way: how long to wait before a retry,
what a refused or cut request is told while the server shuts down, and the text-length rule."""

from __future__ import annotations

# Seconds a client should wait before retrying a 429 (busy) or a 503 (shutting down or unavailable).
RETRY_AFTER_S = 1

SHUTTING_DOWN = "server is shutting down; retry shortly (another replica will answer)"
CUT_AT_BOUND = "server is shutting down: synthesis stopped at the drain bound (DRAIN_TIMEOUT_S)"


def text_length_problem(length: int, limit: int, what: str = "text") -> str | None:
    """The 413 message when `length` characters are over MAX_TEXT_LENGTH (`limit`), else None.
    `what` names the text counted (a request's text, or all its segments together)."""
    if length <= limit:
        return None
    return f"{what} is {length} characters; the limit is {limit} (MAX_TEXT_LENGTH)"
