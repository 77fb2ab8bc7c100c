"""Per-request synthesis parameters: defaults per variant, ranges from the seed's table, strict parsing.

Numbers may arrive as strings because kserve's gRPC parameters carry no doubles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .variants import MULTILINGUAL_LANGUAGES, VARIANTS

MAX_SEED = 2**32 - 1


class ParameterError(ValueError):
    """A parameter that is missing, of the wrong type or out of range; the message names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class SynthesisParams:
    exaggeration: float
    cfg_weight: float
    temperature: float
    top_p: float
    min_p: float
    top_k: int
    repetition_penalty: float
    seed: int | None
    language_id: str | None
    max_new_tokens: int


# field: (kind, low, high, description of the range for messages)
FLOAT_RANGES = {
    "exaggeration": (0.0, 2.0),
    "cfg_weight": (0.0, 1.0),
    "temperature": (0.1, 1.5),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "repetition_penalty": (1.0, 10.0),
}
INT_RANGES = {
    "top_k": (0, 10000),
    "seed": (0, MAX_SEED),
}
KNOWN_FIELDS = frozenset(FLOAT_RANGES) | frozenset(INT_RANGES) | {"language_id", "max_new_tokens"}


def _number(field: str, value: Any, kind: str, parse: Callable[[str], Any], low: float, high: float) -> Any:
    """`value` as sent, or parsed from text (gRPC parameters carry no doubles); refuses the rest."""
    expected = f"must be {kind} in [{low}, {high}]"
    if isinstance(value, bool):
        raise ParameterError(field, f"{expected}, got a boolean")
    if isinstance(value, str):
        try:
            return parse(value.strip())
        except ValueError:
            raise ParameterError(field, f"{expected}, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise ParameterError(field, f"{expected}, got {type(value).__name__}")
    return value


def _as_float(field: str, value: Any, low: float, high: float) -> float:
    value = float(_number(field, value, "a number", float, low, high))
    if math.isnan(value) or not (low <= value <= high):
        raise ParameterError(field, f"must be in [{low}, {high}], got {value}")
    return value


def _as_int(field: str, value: Any, low: int, high: int) -> int:
    value = _number(field, value, "an integer", int, low, high)
    if isinstance(value, float):
        if not value.is_integer():
            raise ParameterError(field, f"must be an integer in [{low}, {high}], got {value}")
        value = int(value)
    if not (low <= value <= high):
        raise ParameterError(field, f"must be in [{low}, {high}], got {value}")
    return value


def parse_params(variant: str, raw: Mapping[str, Any], max_new_tokens_ceiling: int) -> SynthesisParams:
    """Validate `raw` (unknown names are left to the caller) and fill in the variant's defaults."""
    spec = VARIANTS[variant]
    defaults: dict[str, Any] = {
        "exaggeration": 0.5,
        "cfg_weight": 0.5,
        "temperature": 0.8,
        "top_p": spec.default_top_p,
        "min_p": spec.default_min_p,
        "top_k": 1000,
        "repetition_penalty": spec.default_repetition_penalty,
        "seed": None,
    }
    values = dict(defaults)
    for field, (low, high) in FLOAT_RANGES.items():
        if raw.get(field) is not None:
            values[field] = _as_float(field, raw[field], low, high)
    for field, (low, high) in INT_RANGES.items():
        if raw.get(field) is not None:
            values[field] = _as_int(field, raw[field], low, high)
    max_new_tokens = max_new_tokens_ceiling
    if raw.get("max_new_tokens") is not None:
        max_new_tokens = _as_int("max_new_tokens", raw["max_new_tokens"], 1, max_new_tokens_ceiling)
    return SynthesisParams(
        **values,
        language_id=_language(variant, raw.get("language_id")),
        max_new_tokens=max_new_tokens,
    )


def _language(variant: str, value: Any) -> str | None:
    if value is None or value == "":
        return "en" if variant == "multilingual" else None
    if not isinstance(value, str):
        raise ParameterError("language_id", f"must be a string, got {type(value).__name__}")
    code = value.strip().lower()
    if variant == "multilingual":
        if code not in MULTILINGUAL_LANGUAGES:
            raise ParameterError("language_id", f"must be one of {', '.join(MULTILINGUAL_LANGUAGES)}, got {value!r}")
        return code
    if code != "en":
        raise ParameterError(
            "language_id", f"the {variant} model speaks English only ('en'); use the multilingual model for {value!r}"
        )
    return None
