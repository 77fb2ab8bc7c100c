"""The T3 batch's KV cache: each layer's keys and values are views into buffers with spare columns, so a
decode step writes its one new column in place.

Why: transformers' DynamicCache appends by concatenation, so every step copies the whole cache of
every layer. For turbo's 8 rows behind a 400-position prompt that is 24 layers x 2 x 6.5 MB in bf16,
read and written once per token (see README, "Batched engine", for the measured step times). Here a
buffer is reallocated only when its spare columns run out, once every SPARE_COLUMNS steps.

The values are the same as DynamicCache's, column for column; attention reads them through a view
whose rows are strided (the buffer's capacity), which the attention kernels accept as they are. A
bf16 T3 on a CPU keeps them in float32 (exact: bf16 values widen without rounding), because its
attention runs in float32 (attention.py) and would otherwise cast the whole cache every layer and
step: 29 ms of a 112 ms 8-request turbo forward.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

SPARE_COLUMNS = 64


class ReservedLayer(DynamicLayer):
    """`dtype`: what the buffers hold (default: the keys' dtype); new columns are cast to it."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, dtype: torch.dtype | None = None):
        super().__init__()
        self.dtype, self.device = dtype or keys.dtype, keys.device
        self.is_initialized = True
        self._reserve(keys, values, SPARE_COLUMNS)

    def _reserve(self, keys: torch.Tensor, values: torch.Tensor, spare: int) -> None:
        rows, heads, columns, dim = keys.shape
        self._key_buffer = keys.new_empty(rows, heads, columns + spare, dim, dtype=self.dtype)
        self._value_buffer = values.new_empty(rows, heads, columns + spare, values.shape[-1], dtype=self.dtype)
        self._key_buffer[:, :, :columns] = keys
        self._value_buffer[:, :, :columns] = values
        self._set_columns(columns)

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._key_buffer[:, :, : self.columns], self._value_buffer[:, :, : self.columns]

    def _set_columns(self, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.columns = columns
        self.keys, self.values = views = self._views()
        return views

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, cache_kwargs: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.columns, self.columns + key_states.shape[-2]
        if end > self._key_buffer.shape[-2]:
            self._reserve(*self._views(), max(SPARE_COLUMNS, end - start))
        self._key_buffer[:, :, start:end] = key_states
        self._value_buffer[:, :, start:end] = value_states
        return self._set_columns(end)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        keys, values = self._views()
        self._reserve(keys[indices], values[indices], SPARE_COLUMNS)


class ReservedCache(DynamicCache):
    """A DynamicCache (models accept it as one) built from per-layer (keys, values), copied once,
    held in `dtype` (default: as given)."""

    def __init__(self, layers: Iterable[tuple[torch.Tensor, torch.Tensor]], dtype: torch.dtype | None = None):
        Cache.__init__(self, layers=[ReservedLayer(keys, values, dtype) for keys, values in layers])
