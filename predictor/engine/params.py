"""Per-request synthesis parameters, parsed strictly by the rules of the shared table (contract/params.py).

Numbers may arrive as strings because kserve's gRPC parameters carry no doubles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from contract.params import BY_NAME, PARAMETERS, Parameter, ParameterError, check_language

__all__ = ["KNOWN_FIELDS", "ParameterError", "SynthesisParams", "parse_params"]

KNOWN_FIELDS = frozenset(BY_NAME)


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
    language_id: str | None  # multilingual only; None on the English-only models
    max_new_tokens: int


def _number(p: Parameter, value: Any, kind: str, parse: Callable[[str], Any], high: float) -> Any:
    """`value` as sent, or parsed from text (gRPC parameters carry no doubles); refuses the rest."""
    expected = f"must be {kind} in [{p.low}, {high}]"
    if isinstance(value, bool):
        raise ParameterError(p.name, f"{expected}, got a boolean")
    if isinstance(value, str):
        try:
            return parse(value.strip())
        except ValueError:
            raise ParameterError(p.name, f"{expected}, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise ParameterError(p.name, f"{expected}, got {type(value).__name__}")
    return value


def _as_float(p: Parameter, value: Any, high: float) -> float:
    value = float(_number(p, value, "a number", float, high))
    if math.isnan(value) or not (p.low <= value <= high):
        raise ParameterError(p.name, f"must be in [{p.low}, {high}], got {value}")
    return value


def _as_int(p: Parameter, value: Any, high: float) -> int:
    value = _number(p, value, "an integer", int, high)
    if isinstance(value, float):
        if not value.is_integer():
            raise ParameterError(p.name, f"must be an integer in [{p.low}, {high}], got {value}")
        value = int(value)
    if not (p.low <= value <= high):
        raise ParameterError(p.name, f"must be in [{p.low}, {high}], got {value}")
    return value


def parse_params(variant: str, raw: Mapping[str, Any], max_new_tokens_ceiling: int) -> SynthesisParams:
    """Validate `raw` (unknown names are left to the caller) and fill in the variant's defaults."""
    values: dict[str, Any] = {}
    for p in PARAMETERS:
        value = raw.get(p.name)
        if p.name == "language_id":
            code = check_language(variant, value)
            values[p.name] = code if variant in p.variants else None
        elif p.name == "max_new_tokens":
            values[p.name] = max_new_tokens_ceiling if value is None else _as_int(p, value, max_new_tokens_ceiling)
        elif value is None:
            values[p.name] = p.default_for(variant)
        else:
            # Every numeric parameter but max_new_tokens (handled above) has a fixed upper bound.
            assert p.high is not None
            if p.type is float:
                values[p.name] = _as_float(p, value, p.high)
            else:
                values[p.name] = _as_int(p, value, p.high)
    return SynthesisParams(**values)
