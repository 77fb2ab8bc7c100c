"""CPU attention under bf16 (predictor/engine/attention.py): T3's float32 attention gives the same
result as sdpa over the widened inputs, returned in the caller's dtype; the flow estimator's
attention processor computes what diffusers' own does; each is switched on only where it belongs;
and which dtype DTYPE gives each component."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from predictor.engine import precision as precision_module
from predictor.engine.attention import (
    IMPLEMENTATION,
    MATMUL_ATTENTION_MAX_FRAMES,
    FlowAttention,
    attend_in_float32_on_cpu,
    sdpa_in_float32,
    use_flow_attention,
)
from predictor.engine.precision import Precision, resolve_precision


def _inputs(dtype: torch.dtype, columns: int = 7):
    generator = torch.Generator().manual_seed(columns)
    q, k, v = (torch.randn(2, 4, n, 8, generator=generator).to(dtype) for n in (1, columns, columns))
    mask = torch.ones(2, 1, 1, columns, dtype=torch.bool)
    mask[0, ..., :3] = False  # the first row is left-padded, as in the T3 batch
    return q, k, v, mask


class _Module(torch.nn.Module):
    is_causal = False  # what sdpa_attention_forward reads off the attention module


def test_bf16_inputs_attend_as_sdpa_does_on_their_float32_widening():
    q, k, v, mask = _inputs(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the T3 pass's context: it must not cast back
        got, _ = sdpa_in_float32(_Module(), q, k, v, mask)
    want, _ = sdpa_attention_forward(_Module(), q.float(), k.float(), v.float(), mask)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, want.to(torch.bfloat16))


def test_float32_keys_and_values_from_the_cache_are_taken_as_they_are():
    q, k, v, mask = _inputs(torch.bfloat16)
    got, _ = sdpa_in_float32(_Module(), q, k.float(), v.float(), mask)
    want, _ = sdpa_in_float32(_Module(), q, k, v, mask)
    assert torch.equal(got, want)


def _gpt2() -> GPT2Model:
    return GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=8, attn_implementation="sdpa"))


def _llama() -> LlamaModel:
    config = LlamaConfig(
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        hidden_size=16,
        intermediate_size=32,
        vocab_size=8,
        attn_implementation="sdpa",
    )
    return LlamaModel(config)


@pytest.mark.parametrize("build", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_a_bf16_backbone_on_a_cpu_attends_in_float32_and_still_computes_the_same(build):
    torch.manual_seed(0)
    model = build().eval()
    embeds = torch.randn(2, 5, 16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(inputs_embeds=embeds).last_hidden_state
        assert attend_in_float32_on_cpu(model)
        assert model.config._attn_implementation == IMPLEMENTATION
        after = model(inputs_embeds=embeds).last_hidden_state
    # Only the attention product's rounding changed: bf16 activations agree to bf16's precision.
    assert torch.allclose(before.float(), after.float(), atol=0.05, rtol=0.05)


def test_eager_attention_is_left_alone():
    model = _gpt2()
    model.config._attn_implementation = "eager"  # what the multilingual alignment analyzer needs
    assert not attend_in_float32_on_cpu(model)
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize(
    ("device", "dtype", "switched", "cache"),
    [
        ("cpu", torch.bfloat16, True, torch.float32),
        ("cpu", torch.float32, False, None),  # the conformance path is never touched
        ("cuda", torch.bfloat16, False, None),  # CUDA's bf16 kernels are the fast ones
    ],
)
def test_precision_decides_where_attention_runs_in_float32(device, dtype, switched, cache):
    precision = Precision(device, dtype, dtype)
    assert precision.t3_attends_in_float32 is switched and precision.t3_cache_dtype == cache
    if device == "cpu":
        model = _gpt2()
        precision.adapt_t3(model)
        assert (model.config._attn_implementation == IMPLEMENTATION) is switched


@pytest.mark.parametrize(
    ("setting", "native_bf16", "want"),
    [
        ("auto", True, (torch.bfloat16, torch.bfloat16, torch.bfloat16)),
        ("auto", False, (torch.float32, torch.float32, torch.float32)),
        ("bfloat16", False, (torch.bfloat16, torch.bfloat16, torch.bfloat16)),
        ("float16", True, (torch.float16, torch.float16, torch.float32)),  # exp() of HiFT overflows fp16
        ("float32", True, (torch.float32, torch.float32, torch.float32)),
    ],
)
def test_dtype_setting_per_component_on_a_cpu(monkeypatch, setting, native_bf16, want):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native_bf16)
    got = resolve_precision(setting, "cpu")
    assert (got.t3, got.flow, got.hift) == want


def _flow_attention_block(length: int = 20, dim_head: int = 8):
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    block = Attention(query_dim=32, heads=4, dim_head=dim_head).eval()  # as the flow estimator builds them
    block.set_processor(AttnProcessor2_0())
    frames = torch.randn(3, length, 32)
    keep = torch.ones(3, 1, length, dtype=torch.bool)
    keep[1, :, length - 7 :] = False  # a shorter request, right-padded in a batched estimator call
    bias = (1.0 - keep.float()) * -1.0e10  # as the estimator turns its mask into a bias
    return block, frames, bias


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("length", [20, MATMUL_ATTENTION_MAX_FRAMES + 1])  # the whole batch, then one head at a time
@pytest.mark.parametrize("dim_head", [8, 16])  # 16: 1/sqrt(d) is a power of two, which goes into q at once
def test_the_flow_attention_processor_computes_what_diffusers_computes(autocast, length, dim_head):
    block, frames, bias = _flow_attention_block(length, dim_head)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        want = block(frames, attention_mask=bias)
        assert use_flow_attention(torch.nn.Sequential(block)) == 1 and isinstance(block.processor, FlowAttention)
        got = block(frames, attention_mask=bias)
    assert got.dtype == want.dtype
    tolerance = 2e-2 if autocast else 1e-5
    torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    ("device", "flow", "switched"),
    [("cpu", torch.bfloat16, True), ("cpu", torch.float32, False), ("cuda", torch.bfloat16, False)],
)
def test_precision_decides_where_the_flow_attention_processor_goes(device, flow, switched):
    block, _, _ = _flow_attention_block()
    Precision(device, torch.float32, flow).adapt_flow(torch.nn.Sequential(block))
    assert isinstance(block.processor, FlowAttention) is switched
