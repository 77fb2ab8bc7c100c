"""Splitting long text into pieces the model handles well.

Upstream quality degrades past about 300 characters and one call stops at 1000 tokens (about 40 s),
so text is cut at sentence boundaries, and over-long sentences at clause boundaries or spaces.
"""

from __future__ import annotations

import re

from contract.tags import TAG_PATTERN

MAX_PIECE_CHARS = 300

# A sentence ends at . ! ? (and their CJK/Devanagari forms) followed by space or end of text.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？।])[\"')\]]*\s+|(?<=[。！？])")
_CLAUSE_END = re.compile(r"(?<=[,;:，；、])\s*")
# A word is a run of non-space characters, where a tag counts as one character: turbo's `[clear
# throat]` has a space, and a piece boundary inside it would leave two halves read as text.
_WORD = re.compile(rf"(?:{TAG_PATTERN.pattern}|\S)+")


def split_text(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """Return non-empty pieces, in order, each at most `max_chars` long where a boundary allows."""
    text = " ".join(text.split())
    if not text:
        return []
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]
    pieces: list[str] = []
    for sentence in sentences:
        pieces.extend(_split_long(sentence, max_chars))
    return _merge_short(pieces, max_chars)


def _split_long(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    units: list[str] = []
    for clause in (c.strip() for c in _CLAUSE_END.split(sentence) if c.strip()):
        units.extend(_split_words(clause, max_chars))
    return _pack(units, max_chars)


def _split_words(clause: str, max_chars: int) -> list[str]:
    if len(clause) <= max_chars:
        return [clause]
    # A single unbroken run (e.g. CJK without spaces) is cut where it must be.
    words = [word[i : i + max_chars] for word in _WORD.findall(clause) for i in range(0, len(word), max_chars)]
    return _pack(words, max_chars)


def _pack(units: list[str], max_chars: int) -> list[str]:
    """Join units with spaces, greedily, into parts of at most `max_chars`."""
    parts: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current} {unit}" if current else unit
        if len(candidate) <= max_chars:
            current = candidate
        else:
            if current:
                parts.append(current)
            current = unit
    if current:
        parts.append(current)
    return parts


def _merge_short(pieces: list[str], max_chars: int) -> list[str]:
    """Join very short neighbours (e.g. "Hi." "Yes.") so each model call has enough context."""
    merged: list[str] = []
    for piece in pieces:
        if merged and len(merged[-1]) < 40 and len(merged[-1]) + 1 + len(piece) <= max_chars:
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return merged
