"""The T3 batch's KV cache: each layer's keys and values are views into buffers with spare rows and
spare columns, so that a decode step, a request joining and a request leaving each write only what
changes.

Why: transformers' DynamicCache appends by concatenation, so every step copies the whole cache of
every layer. For turbo's 8 rows behind a 400-position prompt that is 24 layers x 2 x 6.5 MB in bf16,
read and written once per token (see docs/benchmarks.md, "Batched engine", for the measured step times). A
batch rebuilt on every join and leave copies it all again: eight turbo requests arriving together
spent 1.3-2.4 s joining (36 row copies of 78 MB, most of it first-touch page faults) before the
first shared step.

Layout: the batch's cache is the view `[:rows, :, start:end]` of each buffer.
- A decode step writes column `end` in place; the buffers are reallocated (active rows and columns
  only) when the spare columns on the right run out, once every SPARE_COLUMNS steps.
- A joining request's rows go into spare rows, right-aligned to `end` behind zeroed padding. If its
  prompt is longer than the batch, the window extends to the left over spare columns, zeroed for
  the rows already there.
- A leaving request's rows are overwritten by the last rows (`move_rows`, then `drop_rows`), and
  padding every row has in common is dropped by moving `start` (`trim_left`): no copy of the rest.

The values are the same as DynamicCache's, column for column; attention reads them through views
with strided rows and columns, which the attention kernels accept as they are. A bf16 T3 on a CPU
keeps them in float32 (exact: bf16 values widen without rounding), because its attention runs in
float32 (attention.py) and would otherwise cast the whole cache every layer and step: 29 ms of a
112 ms 8-request turbo forward.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

SPARE_COLUMNS = 64  # on the right: the steps before a reallocation
SPARE_LEFT_COLUMNS = 64  # on the left: how much longer than the batch a joining prompt may be without one
MIN_ROW_CAPACITY = 8  # rows are reserved by doubling from here (untouched rows cost no memory)


class SlotLayer(DynamicLayer):
    """One layer's keys and values; `dtype`: what the buffers hold (default: the first keys'
    dtype); everything written is cast to it."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, dtype: torch.dtype | None = None):
        super().__init__()
        self.dtype, self.device = dtype or keys.dtype, keys.device
        self.is_initialized = True
        heads, key_dim, value_dim = keys.shape[1], keys.shape[-1], values.shape[-1]
        self._key_buffer = keys.new_empty(0, heads, 0, key_dim, dtype=self.dtype)
        self._value_buffer = values.new_empty(0, heads, 0, value_dim, dtype=self.dtype)
        self.rows = self.start = self.end = 0
        self.append_rows(keys, values)

    # ---- the views the model reads ----------------------------------------------------------
    def _set_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows, columns = slice(0, self.rows), slice(self.start, self.end)
        self.keys = self._key_buffer[rows, :, columns]
        self.values = self._value_buffer[rows, :, columns]
        return self.keys, self.values

    def _reallocate(self, row_capacity: int, left: int) -> None:
        """New buffers holding the active rows and columns, `left` spare columns in front of them."""
        width = self.end - self.start
        rows, columns = slice(0, self.rows), slice(self.start, self.end)
        buffers = []
        for old in (self._key_buffer, self._value_buffer):
            new = old.new_empty(row_capacity, old.shape[1], left + width + SPARE_COLUMNS, old.shape[-1])
            new[rows, :, left : left + width] = old[rows, :, columns]
            buffers.append(new)
        self._key_buffer, self._value_buffer = buffers
        self.start, self.end = left, left + width

    # ---- a decode step ----------------------------------------------------------------------
    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, cache_kwargs: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.end + key_states.shape[-2]
        if end > self._key_buffer.shape[-2]:
            self._reallocate(self._key_buffer.shape[0], SPARE_LEFT_COLUMNS)
            end = self.end + key_states.shape[-2]
        self._key_buffer[: self.rows, :, self.end : end] = key_states
        self._value_buffer[: self.rows, :, self.end : end] = value_states
        self.end = end
        return self._set_views()

    # ---- membership -------------------------------------------------------------------------
    def append_rows(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """New rows right-aligned to the end, behind zeros; a longer prompt than the window extends
        it to the left (zeros there for the rows already in)."""
        rows, columns = keys.shape[0], keys.shape[-2]
        grow = max(0, columns - (self.end - self.start))
        capacity = self._key_buffer.shape[0]
        if self.rows + rows > capacity or grow > self.start:
            if self.rows + rows > capacity:
                capacity = max(MIN_ROW_CAPACITY, 2 * capacity, self.rows + rows)
            self._reallocate(capacity, max(self.start, grow + SPARE_LEFT_COLUMNS))
        new, old = slice(self.rows, self.rows + rows), slice(0, self.rows)
        self.start -= grow
        pad = self.end - self.start - columns
        for buffer, tensor in ((self._key_buffer, keys), (self._value_buffer, values)):
            buffer[old, :, self.start : self.start + grow] = 0
            buffer[new, :, self.start : self.start + pad] = 0
            buffer[new, :, self.end - columns : self.end] = tensor
        self.rows += rows
        self._set_views()

    def move_rows(self, source: int, target: int, count: int) -> None:
        """Rows [source, source + count) overwrite rows [target, target + count)."""
        columns = slice(self.start, self.end)
        for buffer in (self._key_buffer, self._value_buffer):
            buffer[target : target + count, :, columns] = buffer[source : source + count, :, columns]
        self._set_views()

    def drop_rows(self, count: int) -> None:
        """The last `count` rows leave."""
        self.rows -= count
        self._set_views()

    def trim_left(self, columns: int) -> None:
        """The first `columns` columns leave (padding in every row)."""
        self.start += columns
        self._set_views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        keys, values = (view[indices] for view in self._set_views())
        self.rows = self.start = self.end = 0
        self.append_rows(keys, values)


class SlotCache(DynamicCache):
    """A DynamicCache (models accept it as one) built from per-layer (keys, values), copied once,
    held in `dtype` (default: as given). Its row and column operations apply to every layer."""

    def __init__(self, layers: Iterable[tuple[torch.Tensor, torch.Tensor]], dtype: torch.dtype | None = None):
        Cache.__init__(self, layers=[SlotLayer(keys, values, dtype) for keys, values in layers])

    @property
    def slot_layers(self) -> list[SlotLayer]:
        return cast(list[SlotLayer], self.layers)

    def append_rows(self, layers: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for layer, (keys, values) in zip(self.slot_layers, layers, strict=True):
            layer.append_rows(keys, values)

    def move_rows(self, source: int, target: int, count: int) -> None:
        for layer in self.slot_layers:
            layer.move_rows(source, target, count)

    def drop_rows(self, count: int) -> None:
        for layer in self.slot_layers:
            layer.drop_rows(count)

    def trim_left(self, columns: int) -> None:
        for layer in self.slot_layers:
            layer.trim_left(columns)
