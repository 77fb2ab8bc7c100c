"""The synthesis parameters: one table, from which the predictor's parser, the adapter's request
models, the V2 model metadata and the documentation tables are all derived.

Ranges and defaults are the seed document's (exaggeration 0-2 / 0.5, cfg_weight 0-1 / 0.5,
temperature 0.1-1.5 / 0.8, top_p 0-1 / 0.95, repetition_penalty >= 1 / 1.2). Where the seed says
nothing, upstream's generate() decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .variants import ENGLISH_ONLY_LANGUAGE, LANGUAGES, VARIANT_NAMES

MAX_SEED = 2**32 - 1  # the generator's seed is an unsigned 32-bit integer
CFG_VARIANTS = ("standard", "multilingual")  # the variants that run classifier-free guidance


def _number_text(value: float) -> str:
    return f"{value:.1f}" if isinstance(value, float) and value.is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Parameter:
    name: str
    type: type  # float, int or str
    description: str
    default: Any  # when the client omits it; None: see `default_text`
    low: float | None = None
    high: float | None = None  # None: no fixed upper bound (see `range_text`)
    # The variants whose generation uses it; the others accept it and ignore it.
    variants: tuple[str, ...] = VARIANT_NAMES
    # Variants whose default differs from `default` (the reason is in `description`).
    variant_defaults: Mapping[str, Any] = field(default_factory=dict)
    choices: tuple[str, ...] | None = None
    default_text: str | None = None  # how documentation states a default that is not a value
    range_text: str | None = None  # how documentation states a range that is not [low, high]

    def default_for(self, variant: str) -> Any:
        return self.variant_defaults.get(variant, self.default)

    @property
    def documented_range(self) -> str:
        if self.range_text is not None:
            return self.range_text
        if self.choices is not None:
            return f"{len(self.choices)} codes"
        if self.high is None:
            return f">= {self.low:g}" if self.type is float else f">= {self.low}"
        if self.type is float:
            return f"{self.low:.1f}-{self.high:.1f}"
        return f"{self.low}-{self.high}"

    @property
    def documented_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        text = f"`{self.default}`" if isinstance(self.default, str) else _number_text(self.default)
        exceptions = [f"{variant} {_number_text(value)}" for variant, value in self.variant_defaults.items()]
        return f"{text} ({', '.join(exceptions)})" if exceptions else text

    @property
    def documented_variants(self) -> str:
        return "all" if self.variants == VARIANT_NAMES else ", ".join(self.variants)


PARAMETERS: tuple[Parameter, ...] = (
    Parameter(
        "exaggeration",
        float,
        "Emotional intensity",
        default=0.5,
        low=0.0,
        high=2.0,
        variants=CFG_VARIANTS,
    ),
    Parameter(
        "cfg_weight",
        float,
        "Pacing control (classifier-free guidance weight)",
        default=0.5,
        low=0.0,
        high=1.0,
        variants=CFG_VARIANTS,
    ),
    Parameter("temperature", float, "Sampling diversity", default=0.8, low=0.1, high=1.5),
    Parameter("top_p", float, "Nucleus sampling threshold", default=0.95, low=0.0, high=1.0),
    Parameter("min_p", float, "Min-p sampling threshold", default=0.05, low=0.0, high=1.0, variants=CFG_VARIANTS),
    Parameter("top_k", int, "Top-k sampling; 0 disables it", default=1000, low=0, high=10000, variants=("turbo",)),
    Parameter(
        "repetition_penalty",
        float,
        # Multilingual keeps upstream's 2.0: it is the value its generate() is published with, and
        # the seed's 1.2 is documented for the English models only.
        "Repetition penalty (multilingual keeps upstream's 2.0, the value its model is published with); "
        "capped at 10 so that a slip such as 12 for 1.2 is refused rather than distorting speech",
        default=1.2,
        low=1.0,
        high=10.0,
        variant_defaults={"multilingual": 2.0},
        range_text="1.0-10.0",
    ),
    Parameter(
        "seed",
        int,
        "Random seed: the same seed, text, voice and parameters give the same audio",
        default=None,
        low=0,
        high=MAX_SEED,
        default_text="random",
    ),
    Parameter(
        "language_id",
        str,
        f"Language code; multilingual: {' '.join(LANGUAGES)}; standard and turbo speak English only (`en`)",
        default=ENGLISH_ONLY_LANGUAGE,
        variants=("multilingual",),
        choices=LANGUAGES,
    ),
    Parameter(
        "max_new_tokens",
        int,
        "Upper bound on speech tokens per text piece (25 per second); the predictor caps it at MAX_NEW_TOKENS",
        default=None,
        low=1,
        default_text="`MAX_NEW_TOKENS`",
        range_text="1-`MAX_NEW_TOKENS`",
    ),
)
BY_NAME: dict[str, Parameter] = {p.name: p for p in PARAMETERS}


class ParameterError(ValueError):
    """A parameter that is missing, of the wrong type or out of range; the message names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def defaults_for(variant: str) -> dict[str, Any]:
    """Every parameter `variant` uses that has a value default, as the predictor applies it: what a
    caller passes explicitly to upstream's generate() to get the same generation."""
    return {p.name: p.default_for(variant) for p in PARAMETERS if variant in p.variants and p.default is not None}


def check_language(variant: str, value: Any) -> str:
    """The language code to use on `variant` (lower-cased); ParameterError for codes outside the 23,
    and for anything but English on the English-only models."""
    if value is None or value == "":
        return ENGLISH_ONLY_LANGUAGE
    if not isinstance(value, str):
        raise ParameterError("language_id", f"must be a string, got {type(value).__name__}")
    code = value.strip().lower()
    if code not in LANGUAGES:
        raise ParameterError("language_id", f"must be one of {', '.join(LANGUAGES)}, got {value!r}")
    if variant not in BY_NAME["language_id"].variants and code != ENGLISH_ONLY_LANGUAGE:
        raise ParameterError(
            "language_id",
            f"the {variant} model speaks English only ('{ENGLISH_ONLY_LANGUAGE}'); use the multilingual model for {value!r}",
        )
    return code


def markdown_table() -> str:
    """The parameter table as README.md and docs/ show it (tests/ check they match)."""
    rows = ["| Parameter | Type | Range | Default | Used by | Description |", "|---|---|---|---|---|---|"]
    for p in PARAMETERS:
        rows.append(
            f"| `{p.name}` | {p.type.__name__} | {p.documented_range} | {p.documented_default} "
            f"| {p.documented_variants} | {p.description} |"
        )
    return "\n".join(rows)
