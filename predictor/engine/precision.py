"""DTYPE: the precision of each model component.

`auto` is bfloat16 for T3 and the S3Gen flow on CUDA and on a CPU with native bfloat16 (AMX or
AVX512-BF16), and for HiFT's convolutions on such a CPU (`adapt_hift`; its STFTs stay float32);
float32 elsewhere. The flow (encoder and decoder) runs under bf16 autocast; T3's backbone keeps its
linear weights in bf16 (see `store_t3_weights`) and, on a CPU, attends in float32 (attention.py;
`adapt_t3`). Measured on a 2-core AMX CPU with random weights, 2 threads: the flow decoder is 1.8x
faster in bf16 (the first streamed chunk, 14 tokens), the flow encoder 2.5x (75 tokens: 64 -> 26
ms, its output -40 dB from float32's); a T3 step under autocast alone was not faster (136 ms fp32
against 160-182 ms: every step re-cast every weight), with weights stored in bf16 it is: standard
226 -> 70 ms per step (two CFG rows), turbo 83 -> 74 ms, turbo's 8-row step 233 -> 138 ms (GPT-2
medium alone). What bf16 changes in the tokens and the audio is measured by `make bench` (precision
table). `float32` everywhere is what the conformance tests pin: only then is a request
sample-identical to upstream.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import DTYPE_CHOICES
from .attention import attend_in_float32_on_cpu, use_flow_attention

_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Precision:
    device: str
    t3: torch.dtype
    flow: torch.dtype
    hift: torch.dtype = torch.float32  # HiFT's convolutions (adapt_hift)

    def t3_autocast(self) -> contextlib.AbstractContextManager:
        return _autocast(self.device, self.t3)

    def flow_autocast(self) -> contextlib.AbstractContextManager:
        return _autocast(self.device, self.flow)

    def store_t3_weights(self, t3: torch.nn.Module) -> None:
        """Keep the T3 backbone's linear weights, and its speech head's, in the T3 dtype. Autocast
        alone casts every weight on every decode step (its cast cache lives only as long as one
        autocast block, and each step is one), which costs more than bf16 saves; weights stored in
        bf16 halve what each step reads. The head computed the same under autocast (bf16 inputs,
        bf16 logits, sampled in float32) but re-cast its 6563 x 1024 weight at every step: about 3 ms
        of an 8-request turbo step (10-19 ms under the profiler). Everything else stays float32 and autocast casts activations as
        before."""
        if self.t3 == torch.float32:
            return
        backbone = getattr(t3, "tfmr", t3)
        head = getattr(t3, "speech_head", None)
        for module in [*backbone.modules(), *([head] if head is not None else [])]:
            if is_linear_layer(module):
                module.to(self.t3)

    @property
    def t3_attends_in_float32(self) -> bool:
        """A reduced-precision T3 on a CPU computes attention in float32 (attention.py says why)."""
        return self.t3 != torch.float32 and self.device == "cpu"

    @property
    def t3_cache_dtype(self) -> torch.dtype | None:
        """What the T3 batch keeps keys and values in: float32 where attention runs in float32, so
        that they are not cast at every layer and step (kv_cache.py); else as computed (None)."""
        return torch.float32 if self.t3_attends_in_float32 else None

    def adapt_t3(self, t3: torch.nn.Module) -> None:
        """What a reduced-precision T3 needs: its weights stored in that dtype and, on a CPU, its
        attention in float32. A float32 T3 is left untouched."""
        self.store_t3_weights(t3)
        if self.t3_attends_in_float32:
            attend_in_float32_on_cpu(getattr(t3, "tfmr", t3))

    def adapt_flow(self, estimator: torch.nn.Module) -> None:
        """A reduced-precision flow on a CPU computes its estimator's attention as matmuls around a
        float32 softmax (attention.py: torch's CPU attention kernel is slow in bf16). A float32 flow,
        and any flow on CUDA, is left untouched."""
        if self.flow != torch.float32 and self.device == "cpu":
            use_flow_attention(estimator)

    def adapt_hift(self, hift: Any) -> None:  # upstream's HiFTGenerator
        """Run HiFT's convolution stack (`decode`) at `self.hift`; its STFT and inverse STFT stay
        float32, and so do the f0 predictor and the sine source before them, whose phase is summed
        over a whole chunk. Measured (2 threads, AMX, 100 tokens): 0.40 -> 0.30 s per call, the
        waveform -37.7 dB from float32's for the same excitation, against -19 dB between two float32
        renderings with different excitation noise. The instance's methods are replaced; a float32
        HiFT is left untouched."""
        if self.hift == torch.float32:
            return
        device, dtype = self.device, self.hift
        decode, stft, istft = hift.decode, hift._stft, hift._istft

        def decode_reduced(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            with _autocast(device, dtype):
                return decode(x=x, s=s)

        def stft_float32(x: torch.Tensor):
            with torch.autocast(device_type=device, enabled=False):
                return stft(x.float())

        def istft_float32(magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device_type=device, enabled=False):
                return istft(magnitude.float(), phase.float())

        hift.decode, hift._stft, hift._istft = decode_reduced, stft_float32, istft_float32

    def describe(self) -> str:
        return f"t3={_name(self.t3)} flow={_name(self.flow)} hift={_name(self.hift)}"


def is_linear_layer(module: torch.nn.Module) -> bool:
    """A dense layer: torch's Linear, or transformers' Conv1D (GPT-2's linear layers, by name since its
    import path moved between transformers releases)."""
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


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
        if device == "cuda":  # HiFT in bf16 is not measured on a GPU yet: it stays float32 there
            return Precision(device, torch.bfloat16, torch.bfloat16)
        if device == "cpu" and cpu_has_native_bf16():
            return Precision(device, torch.bfloat16, torch.bfloat16, torch.bfloat16)
        return Precision(device, torch.float32, torch.float32)
    dtype = getattr(torch, setting)
    # float16 keeps HiFT in float32: its magnitudes are exp() of the last convolution, which float16 overflows.
    return Precision(device, dtype, dtype, torch.bfloat16 if dtype == torch.bfloat16 else torch.float32)


def _autocast(device: str, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
