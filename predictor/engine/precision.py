"""DTYPE: the precision of each model component, applied as autocast where it pays.

`auto` is bfloat16 on CUDA, and on a CPU with native bfloat16 (AMX or AVX512-BF16) for the S3Gen flow
decoder only; float32 elsewhere. Measured on a 2-core AMX CPU with random weights: the flow under
bf16 autocast is 1.8x faster, the T3 decode step is not faster (136 ms fp32 vs 160-182 ms bf16,
it is bound by small matmuls and cache copies), so T3 stays float32 there. HiFT always runs in
float32 (its STFT needs it). `float32` everywhere is what the conformance tests pin: only then is a
request sample-identical to upstream.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

DtypeSetting = Literal["auto", "float32", "bfloat16", "float16"]
DTYPE_CHOICES: tuple[str, ...] = get_args(DtypeSetting)
_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Precision:
    device: str
    t3: torch.dtype
    flow: torch.dtype

    def t3_autocast(self) -> contextlib.AbstractContextManager:
        return _autocast(self.device, self.t3)

    def flow_autocast(self) -> contextlib.AbstractContextManager:
        return _autocast(self.device, self.flow)

    def describe(self) -> str:
        return f"t3={_name(self.t3)} flow={_name(self.flow)} hift=float32"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in _NATIVE_BF16_FLAGS)


def resolve_precision(setting: str, device: str) -> Precision:
    if setting not in DTYPE_CHOICES:
        raise ValueError(f"DTYPE must be one of {', '.join(DTYPE_CHOICES)}, got {setting!r}")
    if setting == "auto":
        if device == "cuda":
            return Precision(device, torch.bfloat16, torch.bfloat16)
        if device == "cpu" and cpu_has_native_bf16():
            return Precision(device, torch.float32, torch.bfloat16)
        return Precision(device, torch.float32, torch.float32)
    dtype = getattr(torch, setting)
    return Precision(device, dtype, dtype)


def _autocast(device: str, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
