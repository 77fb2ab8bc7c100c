"""Upstream Chatterbox called the way its users call it, for the benchmark and the conformance test."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from predictor.engine.variants import VARIANT_SPECS
from predictor.upstream_patches import tolerate_missing_chinese_segmenter


def load_upstream(variant: str, weights: Path, device: str):
    spec = VARIANT_SPECS[variant]
    if variant == "multilingual":
        tolerate_missing_chinese_segmenter()  # the same offline allowance the predictor makes
    cls = getattr(importlib.import_module(spec.module), spec.class_name)
    return cls.from_local(weights / variant, device)


def upstream_generate(model, variant: str, text: str, cap: int, **kwargs) -> np.ndarray:
    """Upstream generate() with only the token cap changed."""
    if variant == "turbo":
        original = model.t3.inference_turbo
        # inference_turbo samples one token before its loop of max_gen_len steps
        model.t3.inference_turbo = lambda *a, **kw: original(*a, **{**kw, "max_gen_len": cap - 1})
    else:
        original = model.t3.inference
        model.t3.inference = lambda *a, **kw: original(*a, **{**kw, "max_new_tokens": cap})
    try:
        return model.generate(text, **kwargs).squeeze(0).numpy()
    finally:
        if variant == "turbo":
            model.t3.inference_turbo = original
        else:
            model.t3.inference = original
