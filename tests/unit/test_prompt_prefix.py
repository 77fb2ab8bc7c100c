"""The prompt-prefix cache (predictor/engine/prompt_prefix.py): hits, its bound, entries that die with their voice."""

from __future__ import annotations

import gc

import torch

from predictor.engine.prompt_prefix import PromptPrefix, PromptPrefixCache


class Voice:
    """Stands in for a voice's conditionals object: all the cache needs is identity and a weak reference."""


def make_prefix(length: int = 3) -> PromptPrefix:
    layer = (torch.randn(1, 2, length, 4), torch.randn(1, 2, length, 4))
    return PromptPrefix(layers=(layer, layer), length=length)


def computing(counter: list[int], length: int = 3):
    def compute() -> PromptPrefix:
        counter.append(1)
        return make_prefix(length)

    return compute


def test_a_voice_is_computed_once_and_then_served_from_the_cache():
    cache, calls, voice = PromptPrefixCache(4), [], Voice()
    first = cache.get(voice, None, computing(calls))
    assert cache.get(voice, None, computing(calls)) is first
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)


def test_what_else_shapes_the_prefix_is_part_of_the_key():
    cache, calls, voice = PromptPrefixCache(4), [], Voice()
    a = cache.get(voice, 0.5, computing(calls))
    b = cache.get(voice, 0.7, computing(calls))
    assert a is not b and len(calls) == 2


def test_the_least_recently_used_entry_goes_beyond_capacity():
    cache, calls = PromptPrefixCache(2), []
    voices = [Voice(), Voice(), Voice()]
    cache.get(voices[0], None, computing(calls))
    cache.get(voices[1], None, computing(calls))
    cache.get(voices[0], None, computing(calls))  # voices[1] is now the oldest
    cache.get(voices[2], None, computing(calls))
    assert len(cache) == 2 and len(calls) == 3
    cache.get(voices[0], None, computing(calls))
    assert len(calls) == 3
    cache.get(voices[1], None, computing(calls))
    assert len(calls) == 4


def test_an_entry_dies_with_its_voice():
    cache, calls, voice = PromptPrefixCache(4), [], Voice()
    cache.get(voice, None, computing(calls))
    del voice
    gc.collect()
    assert len(cache) == 0


def test_a_new_voice_never_gets_a_dead_voice_s_prefix_even_with_its_id():
    cache, calls = PromptPrefixCache(4), []
    old = Voice()
    stale = cache.get(old, None, computing(calls))
    # As if `old` had died and a new object got its id before the weak reference's callback ran.
    key = next(iter(cache._entries))
    new = Voice()
    cache._entries[(id(new), None)] = (cache._entries.pop(key)[0], stale)
    assert cache.get(new, None, computing(calls)) is not stale


def test_the_cache_for_rows_expands_one_row_and_never_writes_the_stored_tensors():
    prefix = make_prefix(length=3)
    before = [k.clone() for k, _ in prefix.layers]
    cache = prefix.cache(rows=2)
    assert cache.layers[0].keys.shape == (2, 2, 3, 4)
    cache.update(torch.ones(2, 2, 1, 4), torch.ones(2, 2, 1, 4), layer_idx=0)
    assert cache.layers[0].keys.shape == (2, 2, 4, 4)
    assert all(torch.equal(k, b) for (k, _), b in zip(prefix.layers, before, strict=True))


def test_capacity_zero_is_off():
    assert not PromptPrefixCache(0).enabled and PromptPrefixCache(1).enabled
