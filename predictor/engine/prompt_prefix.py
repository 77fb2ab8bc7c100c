"""T3's KV cache for a voice's conditioning prompt, computed once per voice and reused by its requests.

Every T3 prompt starts with the voice's conditioning: the speaker embedding, the voice's speech
tokens (turbo: all 375 of them; standard and multilingual: 32 after the perceiver) and, with CFG,
the exaggeration. Attention is causal, so the keys and values of those positions depend on nothing
that follows them: they are the same for every request of that voice. Measured on CPU, running them
was a fifth of a lone turbo request's time and most of its time to first audio (docs/benchmarks.md, "Batched
engine"), and with N requests arriving together it was paid N times before the first shared step.
With the prefix cached, a request's prefill runs only its text and the start token on top of it.

Entries belong to a voice's conditionals object (the voice cache's entry, or the built-in voice) and
die with it, so the voice cache's bound applies; this cache's own LRU bounds them further, since an
entry is large (turbo: 376 positions x 24 layers x K and V x 1024 values = 37 MB in bf16, 74 MB in
float32).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache


@dataclass(frozen=True)
class PromptPrefix:
    """Per layer (keys, values) of the conditioning positions, for one row."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    length: int

    def cache(self, rows: int) -> DynamicCache:
        """A fresh cache holding the prefix for `rows` rows. DynamicCache appends by concatenation,
        so the cached tensors are never written to."""
        return DynamicCache(
            ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in self.layers]
        )


def run_prefix(tfmr, cond_emb: torch.Tensor) -> PromptPrefix:
    """The backbone's KV over the conditioning embeddings (1, positions, dim)."""
    out = tfmr(inputs_embeds=cond_emb[:1], use_cache=True)
    # One allocation for the whole prefix (turbo: 37 MB in bf16), not 48 of under a megabyte: a block
    # that large is mmapped, so an evicted voice's prefix goes back to the system instead of leaving
    # holes in the heap (the memory soak saw RSS creep with per-layer tensors).
    stacked = torch.stack([torch.stack([layer.keys, layer.values]) for layer in out.past_key_values.layers])
    layers = tuple((stacked[i, 0], stacked[i, 1]) for i in range(stacked.size(0)))
    return PromptPrefix(layers=layers, length=cond_emb.size(1))


class PromptPrefixCache:
    """A bounded LRU of prompt prefixes keyed by (voice conditionals object, what else shapes the
    prefix). `capacity` 0 turns it off: every prefill then runs the whole prompt, as upstream does."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[tuple[int, object], tuple[weakref.ref, PromptPrefix]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, owner: object, detail: object, compute: Callable[[], PromptPrefix]) -> PromptPrefix:
        key = (id(owner), detail)
        with self._lock:
            entry = self._entries.get(key)
            # The weak reference guards against a new object that was given a dead one's id.
            if entry is not None and entry[0]() is owner:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
        prefix = compute()
        with self._lock:
            self.misses += 1
            self._entries[key] = (weakref.ref(owner, functools.partial(self._drop, key)), prefix)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return prefix

    def _drop(self, key: tuple[int, object], _dead: weakref.ref) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is None:
                del self._entries[key]
