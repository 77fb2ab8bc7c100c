"""Attention on a CPU under bfloat16, for T3 and for the S3Gen flow's estimator.

T3: scores and weighted values in float32.

torch 2.6's CPU kernel for `scaled_dot_product_attention` is slow in bfloat16 at decode shapes
(one query row against the cache). Measured on the 2-core AMX CPU, 16 heads of 64 over 300 cached
positions: 8 rows 1.64 ms in bf16 against 0.61 ms when the inputs are cast to float32 first (0.25 ms
of it the kernel), 1 row 0.21 against 0.06 ms. Over T3's 24 layers that was a fifth of an 8-request
turbo tick. Only the attention product changes precision: keys, values and queries are the bf16
projections they were, and the result goes back to the caller's dtype. A float32 model, the one the
conformance tests pin, never reaches this code: `attend_in_float32_on_cpu` is only called for bf16
or fp16 T3 on a CPU (on CUDA the reduced-precision kernels are the fast ones).

The flow estimator (diffusers attention blocks, full self-attention over a flow run's frames): over
the few hundred frames of a streamed chunk's flow run, two matmuls with a float32 softmax between
them are faster than the same CPU kernel. Measured (2 threads, bf16, 8 heads of 64, a padding
bias; 2 rows are one request's CFG pair, 16 rows eight requests): 150 frames 1.28 -> 0.70 ms (2
rows) and 8.2 -> 3.7 ms (16 rows), 250 frames 2.1 -> 1.6 and 16.9 -> 11.3 ms; from 300 frames the
kernel beats those matmuls over the whole batch at once (16 rows at 500 frames: 59 against 202 ms):
their float32 scores outgrow the caches. Longer runs (a whole utterance behind the voice prompt,
unstreamed) therefore attend one head of one row at a time (`_attention_per_head`): two bf16 matmuls,
which this CPU's AVX512-BF16 runs about 3x faster than float32 ones, around a float32 softmax over
scores that stay in cache (706 frames: 2 MB). Measured (2 threads, bf16, 706 frames, the machine
otherwise idle): 16 rows 150 -> 106 ms and 161 -> 122 ms, 2 rows 21 -> 21 ms and 29 -> 19 ms against
the kernel. 56 such calls per estimator call; relative error against float32 attention over the same
bf16 inputs 0.0050 (whole) and 0.0043 (per head), the kernel's own 0.0036. `FlowAttention` is
installed (`use_flow_attention`) only for a reduced-precision flow on a CPU.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from . import shared_prefix

IMPLEMENTATION = "sdpa_float32"  # a name of our own in transformers' attention registry


def sdpa_in_float32(module, query, key, value, attention_mask, **kwargs):
    """`sdpa_attention_forward` with its inputs in float32 and autocast off; output in `query`'s dtype.
    A decode step of a batch with a shared prompt prefix reads the prefix once (shared_prefix.py)."""
    plan = shared_prefix.active_plan()
    if plan is not None and query.shape[-2] == 1:
        scale = kwargs.get("scaling") or query.shape[-1] ** -0.5
        with torch.autocast(query.device.type, enabled=False):
            return shared_prefix.attend(plan, query, key, value, scale), None
    dtype = query.dtype
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast(query.device.type, enabled=False):
        output, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return output.to(dtype), weights


AttentionInterface.register(IMPLEMENTATION, sdpa_in_float32)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)  # the same masks as sdpa


def attend_in_float32_on_cpu(backbone) -> bool:
    """Switch a T3 backbone (GPT-2 or Llama) from sdpa to `sdpa_in_float32`. Eager attention (the
    multilingual alignment analyzer reads its weights) is left as it is. Returns whether it switched."""
    if getattr(backbone.config, "_attn_implementation", None) != "sdpa":
        return False
    backbone.config._attn_implementation = IMPLEMENTATION
    return True


MATMUL_ATTENTION_MAX_FRAMES = 256  # longer flow runs attend one head at a time (see above)


class FlowAttention:
    """A diffusers attention processor for the flow estimator's self-attention blocks, computing
    softmax(q k^T / sqrt(d) + bias) v as two matmuls (at the autocast dtype) around a float32 softmax:
    over the whole batch for up to MATMUL_ATTENTION_MAX_FRAMES keys, one head of one row at a time beyond.
    What it does not handle (spatial or group norms, residual connections, output rescaling,
    normalised cross-attention inputs) it refuses in `fits`, and those blocks keep their processor."""

    @staticmethod
    def fits(attn: Any) -> bool:
        return (
            attn.spatial_norm is None
            and attn.group_norm is None
            and not attn.residual_connection
            and attn.rescale_output_factor == 1.0
            and not attn.norm_cross
        )

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        batch = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        query = attn.to_q(hidden_states)
        heads, head_dim = attn.heads, query.shape[-1] // attn.heads
        q, k, v = (
            projected.view(batch, -1, heads, head_dim).transpose(1, 2)
            for projected in (query, attn.to_k(context), attn.to_v(context))
        )
        if k.shape[-2] > MATMUL_ATTENTION_MAX_FRAMES:
            out = _attention_per_head(q, k, v, attention_mask)
        else:
            out = _matmul_attention(q, k, v, attention_mask)
        out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


def _matmul_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None, scaled: bool = False
) -> torch.Tensor:
    """`scaled`: q already carries the 1/sqrt(d) factor."""
    scores = torch.matmul(q, k.transpose(-1, -2))
    with torch.autocast(scores.device.type, enabled=False):
        scores = scores.float()
        if not scaled:
            scores = scores * q.shape[-1] ** -0.5
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            else:
                scores = scores + attention_mask.float()
        weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights.to(v.dtype), v)


def _attention_per_head(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """`_matmul_attention` for each (row, head) in turn, so that its float32 scores stay in cache.
    Per (row, head) it is two matmuls around a softmax, and at 706 frames the ops between them cost a
    sixth of the whole, so two are left out where that changes nothing: the 1/sqrt(d) factor goes into
    q once when it is a power of two (d = 64: exact in any float format), and a row's bias is not added
    when it masks nothing (no padding: every row of an unstreamed burst with one cap). The output is
    bit for bit the same; 8 rows of 8 heads at 706 frames (2 threads, bf16): 48-53 -> 43-44 ms."""
    batch, heads, head_dim = q.shape[0], q.shape[1], q.shape[-1]
    scale = head_dim**-0.5
    prescaled = math.frexp(scale)[0] == 0.5  # a power of two
    if prescaled:
        q = q * scale
    mask = None if attention_mask is None else attention_mask.expand(batch, heads, *attention_mask.shape[2:])
    out = torch.empty(q.shape[:-1] + v.shape[-1:], dtype=v.dtype, device=v.device)
    for row in range(batch):
        row_mask = None if mask is None or _masks_nothing(mask[row]) else mask[row]
        for head in range(heads):
            head_mask = None if row_mask is None else row_mask[head]
            out[row, head] = _matmul_attention(q[row, head], k[row, head], v[row, head], head_mask, prescaled)
    return out


def _masks_nothing(mask: torch.Tensor) -> bool:
    return bool(mask.all()) if mask.dtype == torch.bool else not bool(mask.any())


def use_flow_attention(estimator: torch.nn.Module) -> int:
    """Give every attention block of the flow estimator that `FlowAttention` fits to it; returns how many."""
    from diffusers.models.attention_processor import Attention

    switched = 0
    for module in estimator.modules():
        if isinstance(module, Attention) and FlowAttention.fits(module):
            module.set_processor(FlowAttention())  # type: ignore[arg-type]  # a processor is any callable of this shape
            switched += 1
    return switched
