"""Turbo's tags (`[laugh]`, `[sigh]`, `[clear throat]`...): what counts as a tag in a text, and the
400 a text gets when its model does not know one. Both services check with this one rule: the
predictor in every request it prepares, the adapter for every segment before the first is spoken.

A tag is `[`, one or more words of ASCII letters separated by single spaces, then `]`. Anything
else in brackets (`[1]`, `[pause:500]`, `[ laugh ]`, `[a-b]`) is not a tag: it is read as text.
Case counts (the tokenizer matches added tokens exactly), so `[Laugh]` is an unknown tag, refused
with the list of known ones rather than read out.

Which tags a model knows is read from its loaded tokenizer (its added tokens of this shape; see
predictor/engine/variants.py), never kept in a list here. Turbo's GPT-2 tokenizer has 19; the
grapheme tokenizers of standard and multilingual have none, so any tag there is refused: they
would read it out letter by letter.
"""

from __future__ import annotations

import re
from collections.abc import Collection

TAG_PATTERN = re.compile(r"\[[A-Za-z]+(?: [A-Za-z]+)*\]")


def is_tag(token: str) -> bool:
    return TAG_PATTERN.fullmatch(token) is not None


def tags_in(text: str) -> list[str]:
    """The tags in `text`, each once, in order of first use."""
    return list(dict.fromkeys(TAG_PATTERN.findall(text)))


def tag_problem(text: str, model: str, known: Collection[str]) -> str | None:
    """The 400 message when `text` has a tag that `model` (whose tokenizer has the tags `known`)
    does not know, else None."""
    found = tags_in(text)
    if not found:
        return None
    if not known:
        return f"the {model} model takes no tags (its tokenizer has none), and the text has {', '.join(found)}"
    unknown = [tag for tag in found if tag not in known]
    if not unknown:
        return None
    return (
        f"unknown tag{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for the {model} model; "
        f"its tags are {', '.join(known)}"
    )
