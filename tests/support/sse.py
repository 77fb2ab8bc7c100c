"""Reading server-sent events as the tests receive them (OpenAI's SSE speech stream, the predictor's
V2 streaming extension)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def sse_events(lines: Iterable[str | bytes]) -> list[Any]:
    """The JSON of each `data:` line, in order; other lines (blank separators, comments) are skipped."""
    events = []
    for line in lines:
        text = line.decode() if isinstance(line, bytes) else line
        if text.startswith("data:"):
            events.append(json.loads(text[5:]))
    return events
