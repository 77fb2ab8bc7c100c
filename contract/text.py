"""Text both services refuse before it reaches a model or an encoder."""

from __future__ import annotations

import re

# JSON's \uD800-\uDFFF escapes decode to lone surrogates, which no UTF-8 encoder accepts.
_SURROGATE = re.compile("[\ud800-\udfff]")


def unpaired_surrogate_message(field: str, value: str) -> str | None:
    """A message naming the problem when `value` holds an unpaired UTF-16 surrogate, else None."""
    match = _SURROGATE.search(value)
    if match is None:
        return None
    return (
        f"{field}: contains an unpaired UTF-16 surrogate (\\u{ord(match.group()):04x}) at position {match.start()}; "
        "send valid Unicode text"
    )
