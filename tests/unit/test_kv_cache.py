"""The batch's reserved KV cache holds what DynamicCache holds, column for column, and writes each
step in place, reallocating only when its spare columns run out."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from predictor.engine.kv_cache import SPARE_COLUMNS, ReservedCache


def _layers(rows: int, columns: int, layers: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(columns)
    return [
        (torch.randn(rows, 4, columns, 8, generator=generator), torch.randn(rows, 4, columns, 8, generator=generator))
        for _ in range(layers)
    ]


def test_updates_match_dynamic_cache_across_reallocations():
    start = _layers(rows=3, columns=5)
    reserved = ReservedCache(start)
    dynamic = DynamicCache(ddp_cache_data=start)
    for step in range(SPARE_COLUMNS * 2 + 7):
        for index, (keys, values) in enumerate(_layers(rows=3, columns=1)):
            got = reserved.update(keys + step, values - step, index)
            want = dynamic.update(keys + step, values - step, index)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert reserved.get_seq_length() == dynamic.get_seq_length() == 5 + SPARE_COLUMNS * 2 + 7


def test_a_step_writes_in_place_until_the_spare_columns_run_out():
    reserved = ReservedCache(_layers(rows=2, columns=10, layers=1))
    buffer = reserved.layers[0].keys.untyped_storage().data_ptr()
    keys, values = _layers(rows=2, columns=1, layers=1)[0]
    for _ in range(SPARE_COLUMNS):
        reserved.update(keys, values, 0)
        assert reserved.layers[0].keys.untyped_storage().data_ptr() == buffer
    reserved.update(keys, values, 0)
    assert reserved.layers[0].keys.untyped_storage().data_ptr() != buffer


def test_the_callers_tensors_are_copied_not_written():
    start = _layers(rows=1, columns=4, layers=1)
    before = start[0][0].clone()
    reserved = ReservedCache(start)
    reserved.update(torch.ones(1, 4, 1, 8), torch.ones(1, 4, 1, 8), 0)
    reserved.layers[0].keys.zero_()
    assert torch.equal(start[0][0], before)


def test_selecting_rows_keeps_their_columns():
    start = _layers(rows=4, columns=6, layers=2)
    reserved = ReservedCache(start)
    reserved.batch_select_indices(torch.tensor([3, 1]))
    for layer, (keys, values) in zip(reserved.layers, start, strict=True):
        assert torch.equal(layer.keys, keys[[3, 1]]) and torch.equal(layer.values, values[[3, 1]])


def test_a_float32_cache_of_bf16_columns_holds_them_widened_exactly():
    start = [(keys.bfloat16(), values.bfloat16()) for keys, values in _layers(rows=2, columns=5)]
    reserved = ReservedCache(start, torch.float32)
    dynamic = DynamicCache(ddp_cache_data=start)
    for step in range(SPARE_COLUMNS + 3):  # across a reallocation, which keeps the dtype
        for index, (keys, values) in enumerate(_layers(rows=2, columns=1)):
            keys, values = (keys + step).bfloat16(), (values - step).bfloat16()
            got = reserved.update(keys, values, index)
            want = dynamic.update(keys, values, index)
            assert all(a.dtype == torch.float32 and torch.equal(a, b.float()) for a, b in zip(got, want, strict=True))
    reserved.batch_select_indices(torch.tensor([1]))
    assert reserved.layers[0].keys.dtype == torch.float32
