"""The batch's slot KV cache holds what DynamicCache holds, column for column, writes each step in
place (reallocating only when its spare columns run out), and takes rows in and out by writing
only those rows."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from predictor.engine.kv_cache import SPARE_COLUMNS, SPARE_LEFT_COLUMNS, SlotCache


def _layers(rows: int, columns: int, layers: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(columns)
    return [
        (torch.randn(rows, 4, columns, 8, generator=generator), torch.randn(rows, 4, columns, 8, generator=generator))
        for _ in range(layers)
    ]


def test_updates_match_dynamic_cache_across_reallocations():
    start = _layers(rows=3, columns=5)
    slots = SlotCache(start)
    dynamic = DynamicCache(ddp_cache_data=start)
    for step in range(SPARE_COLUMNS * 2 + 7):
        for index, (keys, values) in enumerate(_layers(rows=3, columns=1)):
            got = slots.update(keys + step, values - step, index)
            want = dynamic.update(keys + step, values - step, index)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert slots.get_seq_length() == dynamic.get_seq_length() == 5 + SPARE_COLUMNS * 2 + 7


def test_a_step_writes_in_place_until_the_spare_columns_run_out():
    slots = SlotCache(_layers(rows=2, columns=10, layers=1))
    buffer = slots.layers[0].keys.untyped_storage().data_ptr()
    keys, values = _layers(rows=2, columns=1, layers=1)[0]
    for _ in range(SPARE_COLUMNS):
        slots.update(keys, values, 0)
        assert slots.layers[0].keys.untyped_storage().data_ptr() == buffer
    slots.update(keys, values, 0)
    assert slots.layers[0].keys.untyped_storage().data_ptr() != buffer


def test_the_callers_tensors_are_copied_not_written():
    start = _layers(rows=1, columns=4, layers=1)
    before = start[0][0].clone()
    slots = SlotCache(start)
    slots.update(torch.ones(1, 4, 1, 8), torch.ones(1, 4, 1, 8), 0)
    slots.layers[0].keys.zero_()
    assert torch.equal(start[0][0], before)


def test_selecting_rows_keeps_their_columns():
    start = _layers(rows=4, columns=6, layers=2)
    slots = SlotCache(start)
    slots.batch_select_indices(torch.tensor([3, 1]))
    for layer, (keys, values) in zip(slots.layers, start, strict=True):
        assert torch.equal(layer.keys, keys[[3, 1]]) and torch.equal(layer.values, values[[3, 1]])


def test_a_float32_cache_of_bf16_columns_holds_them_widened_exactly():
    start = [(keys.bfloat16(), values.bfloat16()) for keys, values in _layers(rows=2, columns=5)]
    slots = SlotCache(start, torch.float32)
    dynamic = DynamicCache(ddp_cache_data=start)
    for step in range(SPARE_COLUMNS + 3):  # across a reallocation, which keeps the dtype
        for index, (keys, values) in enumerate(_layers(rows=2, columns=1)):
            keys, values = (keys + step).bfloat16(), (values - step).bfloat16()
            got = slots.update(keys, values, index)
            want = dynamic.update(keys, values, index)
            assert all(a.dtype == torch.float32 and torch.equal(a, b.float()) for a, b in zip(got, want, strict=True))
    slots.batch_select_indices(torch.tensor([1]))
    assert slots.layers[0].keys.dtype == torch.float32


def _left_padded(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (0, 0, columns, 0))


def test_joining_rows_are_right_aligned_behind_zeros_and_a_longer_prompt_pads_the_others():
    first, shorter, longer = _layers(rows=2, columns=10), _layers(rows=2, columns=7), _layers(rows=2, columns=13)
    slots = SlotCache(first)
    buffer = slots.layers[0].keys.untyped_storage().data_ptr()
    slots.append_rows(shorter)
    slots.append_rows(longer)
    for layer, (a, b, c) in zip(slots.layers, zip(first, shorter, longer, strict=True), strict=True):
        want_keys = torch.cat([_left_padded(a[0], 3), _left_padded(b[0], 6), c[0]])
        want_values = torch.cat([_left_padded(a[1], 3), _left_padded(b[1], 6), c[1]])
        assert torch.equal(layer.keys, want_keys) and torch.equal(layer.values, want_values)
    # 6 rows fit the reserved rows, 3 more columns the spare ones on the left: no new buffer
    assert slots.layers[0].keys.untyped_storage().data_ptr() == buffer
    assert slots.get_seq_length() == 13


def test_rows_beyond_the_reserve_and_a_prompt_beyond_the_left_spare_reallocate_and_keep_every_row():
    start = _layers(rows=1, columns=4, layers=1)
    slots = SlotCache(start)
    joined = [_layers(rows=1, columns=4 + i, layers=1)[0] for i in range(1, 12)]
    joined.append(_layers(rows=1, columns=20 + SPARE_LEFT_COLUMNS, layers=1)[0])
    for layer in joined:
        slots.append_rows([layer])
    width = slots.get_seq_length()
    assert width == 20 + SPARE_LEFT_COLUMNS
    for row, (keys, values) in enumerate(start + joined):
        pad = width - keys.shape[-2]
        assert torch.equal(slots.layers[0].keys[row : row + 1, :, pad:], keys)
        assert torch.equal(slots.layers[0].values[row : row + 1, :, pad:], values)
        assert not slots.layers[0].keys[row, :, :pad].any()


def test_leaving_rows_are_replaced_by_the_last_ones_and_common_padding_is_trimmed():
    layers = [_layers(rows=2, columns=9 + i, layers=2) for i in range(3)]
    slots = SlotCache(layers[0])
    slots.append_rows(layers[1])
    slots.append_rows(layers[2])  # rows 0-1 padded by 2, rows 2-3 by 1, rows 4-5 by none
    slots.move_rows(4, 2, 2)  # the middle request leaves; the last takes its rows
    slots.drop_rows(2)
    for layer, (first, last) in zip(slots.layers, zip(layers[0], layers[2], strict=True), strict=True):
        assert torch.equal(layer.keys, torch.cat([_left_padded(first[0], 2), last[0]]))
    slots.drop_rows(2)  # then the last, now in the middle
    slots.trim_left(2)  # the first's padding, the only rows left
    for layer, (keys, values) in zip(slots.layers, layers[0], strict=True):
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)
    step = _layers(rows=2, columns=1, layers=2)
    for index, (keys, values) in enumerate(step):
        got_keys, got_values = slots.update(keys, values, index)
        assert torch.equal(got_keys, torch.cat([layers[0][index][0], keys], dim=2))
        assert torch.equal(got_values, torch.cat([layers[0][index][1], values], dim=2))
