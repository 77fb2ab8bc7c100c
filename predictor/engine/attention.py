"""T3's attention on a CPU under bfloat16: scores and weighted values in float32.

torch 2.6's CPU kernel for `scaled_dot_product_attention` is slow in bfloat16 at decode shapes
(one query row against the cache). Measured on the 2-core AMX CPU, 16 heads of 64 over 300 cached
positions: 8 rows 1.64 ms in bf16 against 0.61 ms when the inputs are cast to float32 first (0.25 ms
of it the kernel), 1 row 0.21 against 0.06 ms. Over T3's 24 layers that was a fifth of an 8-request
turbo tick. Only the attention product changes precision: keys, values and queries are the bf16
projections they were, and the result goes back to the caller's dtype. A float32 model, the one the
conformance tests pin, never reaches this code: `attend_in_float32_on_cpu` is only called for bf16
or fp16 T3 on a CPU (on CUDA the reduced-precision kernels are the fast ones).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

IMPLEMENTATION = "sdpa_float32"  # a name of our own in transformers' attention registry


def sdpa_in_float32(module, query, key, value, attention_mask, **kwargs):
    """`sdpa_attention_forward` with its inputs in float32 and autocast off; output in `query`'s dtype."""
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
