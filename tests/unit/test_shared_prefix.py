"""Decode attention that reads a shared prompt prefix once (predictor/engine/shared_prefix.py) gives
what SDPA gives over each row's whole window, for any mix of groups, padding and CFG row pairs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from predictor.engine import shared_prefix
from predictor.engine.attention import sdpa_in_float32
from predictor.engine.prompt_prefix import PromptPrefix
from predictor.engine.shared_prefix import MIN_SHARED_POSITIONS, MIN_SHARED_REQUESTS, SharedPrefixPlan

HEADS, DIM = 4, 16


def prefix(length: int, seed: int) -> PromptPrefix:
    generator = torch.Generator().manual_seed(seed)
    layer = tuple(torch.randn(1, HEADS, length, DIM, generator=generator).bfloat16() for _ in range(2))
    return PromptPrefix(layers=(layer,), length=length)  # type: ignore[arg-type]  # one layer


def batch_window(prefixes, own_lengths, rows_per_member):
    """A window like the T3 batch's: each member's rows right-aligned behind left padding, its prompt
    prefix (widened to float32, as the cache holds it) first, then its own positions."""
    total = [(p.length if p is not None else 0) + own for p, own in zip(prefixes, own_lengths, strict=True)]
    columns = max(total)
    generator = torch.Generator().manual_seed(7)
    rows = len(prefixes) * rows_per_member
    key, value = (torch.randn(rows, HEADS, columns + 5, DIM, generator=generator)[:, :, :columns] for _ in range(2))
    padding = [columns - t for t in total]
    visible = torch.zeros(rows, columns, dtype=torch.bool)
    for member, (p, pad) in enumerate(zip(prefixes, padding, strict=True)):
        for row in range(member * rows_per_member, (member + 1) * rows_per_member):
            visible[row, pad:] = True
            if p is not None:
                key[row, :, pad : pad + p.length] = p.layers[0][0][0].float()
                value[row, :, pad : pad + p.length] = p.layers[0][1][0].float()
    # Strided, as GPT-2 hands its queries over: split from its fused q/k/v projection, heads transposed.
    projection = torch.randn(rows, 1, 3 * HEADS * DIM, generator=generator)
    query = projection[..., : HEADS * DIM].view(rows, 1, HEADS, DIM).transpose(1, 2)
    return query, key, value, padding, visible


@pytest.mark.parametrize(
    "shape",
    [
        "one voice, turbo rows",
        "one voice, CFG pairs",
        "two voices and one alone",
        "a member without a prefix",
    ],
)
def test_reading_the_prefix_once_gives_sdpas_attention(shape):
    a, b = prefix(MIN_SHARED_POSITIONS + 12, 1), prefix(MIN_SHARED_POSITIONS, 2)
    prefixes, rows_per_member = {
        "one voice, turbo rows": ([a, a, a, a], 1),
        "one voice, CFG pairs": ([a, a, a, a], 2),
        "two voices and one alone": ([a, b, a, b, a, a, prefix(MIN_SHARED_POSITIONS, 3)], 1),
        "a member without a prefix": ([a, None, a, a, a], 1),
    }[shape]
    own_lengths = [5 + 7 * i for i in range(len(prefixes))]
    query, key, value, padding, visible = batch_window(prefixes, own_lengths, rows_per_member)
    plan = SharedPrefixPlan.build(prefixes, padding, rows_per_member, torch.device("cpu"))
    assert plan is not None
    plan.begin_step(key.shape[-2])
    shared = shared_prefix.attend(plan, query.bfloat16(), key, value, DIM**-0.5)
    expected = F.scaled_dot_product_attention(query.bfloat16().float(), key, value, attn_mask=visible[:, None, None, :])
    expected = expected.transpose(1, 2)
    assert shared.shape == expected.shape and shared.dtype == torch.bfloat16
    # The same float32 sums in another order, then rounded to bf16 as the SDPA path rounds them.
    torch.testing.assert_close(shared.float(), expected.to(torch.bfloat16).float(), rtol=0, atol=1e-2)
    in_float32 = shared_prefix.attend(plan, query, key, value, DIM**-0.5)  # the strided query as it comes
    reference = F.scaled_dot_product_attention(query, key, value, attn_mask=visible[:, None, None, :])
    torch.testing.assert_close(in_float32, reference.transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_no_plan_without_enough_members_sharing_a_prefix_long_enough():
    cpu = torch.device("cpu")
    long, short = prefix(MIN_SHARED_POSITIONS, 1), prefix(MIN_SHARED_POSITIONS - 1, 2)
    padding = [0] * MIN_SHARED_REQUESTS
    equal_not_same = [long] * (MIN_SHARED_REQUESTS - 1) + [prefix(MIN_SHARED_POSITIONS, 1)]
    assert SharedPrefixPlan.build(equal_not_same, padding, 1, cpu) is None
    assert SharedPrefixPlan.build([short] * MIN_SHARED_REQUESTS, padding, 1, cpu) is None
    assert SharedPrefixPlan.build([long] * (MIN_SHARED_REQUESTS - 1) + [None], padding, 1, cpu) is None
    assert SharedPrefixPlan.build([long] * MIN_SHARED_REQUESTS, padding, 1, cpu) is not None


def test_the_float32_attention_uses_the_plan_only_inside_a_planned_pass():
    a = prefix(MIN_SHARED_POSITIONS, 1)
    query, key, value, padding, visible = batch_window([a] * 4, [4, 6, 5, 9], 1)
    plan = SharedPrefixPlan.build([a] * 4, padding, 1, torch.device("cpu"))
    assert plan is not None
    plan.begin_step(key.shape[-2])
    calls = []
    original = shared_prefix.attend

    def counting(*args):
        calls.append(1)
        return original(*args)

    module = torch.nn.Module()
    mask = visible[:, None, None, :]
    shared_prefix.attend = counting
    try:
        outside, _ = sdpa_in_float32(module, query, key, value, mask)
        with shared_prefix.planned(plan):
            inside, _ = sdpa_in_float32(module, query, key, value, mask)
        after, _ = sdpa_in_float32(module, query, key, value, mask)
    finally:
        shared_prefix.attend = original
    assert len(calls) == 1
    torch.testing.assert_close(inside.float(), outside.float(), rtol=0, atol=1e-2)
    torch.testing.assert_close(after, outside)
