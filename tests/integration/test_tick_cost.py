"""What a steady scheduler tick costs the host, counted in aten ops and reads of device values on the
real engine (random weights, DTYPE=auto, the default fast sampler): the counts a GPU pays in kernel
launches and queue drains (tests/support/dispatch_count.py).

- a tick reads the device at most once, however many requests share it;
- each request added to the batch adds at most 2 aten ops to the tick;
- standard's and turbo's shared forward runs torch's SDPA in every layer, never eager attention (or,
  where requests share a long prompt prefix, shared_prefix.py's attention, which reads it once).
"""

from __future__ import annotations

import gc

import pytest
import torch

from predictor.config import PredictorSettings
from predictor.engine import shared_prefix
from predictor.engine.batching import T3Batch
from predictor.engine.engine import ChatterboxEngine
from predictor.engine.scheduler import Scheduler
from predictor.engine.shared_prefix import MIN_SHARED_REQUESTS
from tests.integration.test_batched_exactness import TokensOnly
from tests.support.dispatch_count import counted, host_reads

pytestmark = pytest.mark.slow
# From 2: a lone request runs without an attention mask (as upstream calls it), a few dozen ops fewer.
SIZES = {"turbo": (2, 4, 8), "standard": (2, 4)}
JOIN_TICKS = 4  # every request prefilled and in the batch
COUNTED_TICKS = 2
CAP = JOIN_TICKS + COUNTED_TICKS + 4  # nobody finishes while counted
OPS_PER_ADDED_REQUEST = 2


@pytest.fixture(scope="module", params=list(SIZES))
def engine(request, weights_dir):
    variant = request.param
    settings = PredictorSettings(
        model_dir=str(weights_dir),
        load_standard=variant == "standard",
        load_turbo=variant == "turbo",
        load_multilingual=False,
        dtype="auto",
    )
    engine = ChatterboxEngine(settings)
    engine.load()
    engine.variant = variant
    yield engine
    engine.variants.clear()
    gc.collect()


def steady_tick_cost(engine, requests: int, monkeypatch) -> list[tuple[int, int, int]]:
    """(aten ops, host reads, attention calls) of each counted tick with `requests` in the T3 batch:
    torch's SDPA kernel, or the shared-prefix attention."""
    shared_attends = []
    original = shared_prefix.attend

    def counting(*args):
        shared_attends.append(1)
        return original(*args)

    monkeypatch.setattr(shared_prefix, "attend", counting)
    variant = engine.variant
    scheduler = Scheduler(TokensOnly(engine))
    batch = engine.variants[variant].batch
    costs = []
    with torch.inference_mode():
        for i in range(requests):
            text = ["Hello there, this is a test.", "A second, somewhat longer sentence to speak."][i % 2]
            request = engine.prepare(variant, text, {"seed": 100 + i, "max_new_tokens": CAP})
            scheduler.start(request, False, lambda: False, lambda item: None, lambda: None)
        for _ in range(JOIN_TICKS):
            scheduler.tick()
        assert len(batch) == requests
        for _ in range(COUNTED_TICKS):
            shared_attends.clear()
            with counted() as (ops, reads):
                scheduler.tick()
            attention_calls = ops.matching("scaled_dot_product") + len(shared_attends)
            costs.append((ops.total, host_reads(ops, reads), attention_calls))
        assert len(batch) == requests  # steady: nobody joined or left while counted
        while scheduler.tick():
            pass
    return costs


@pytest.mark.parametrize("prefix_sharing", ["off", "on"])
def test_a_steady_tick_costs_the_host_the_same_whatever_the_batch(engine, monkeypatch, prefix_sharing):
    """Off: the forward as on a GPU (shared_prefix.py only plans where T3 attends in float32 on a
    CPU). On: from MIN_SHARED_REQUESTS requests of one voice the CPU reads their prefix once, a fixed
    number of ops more per layer, and from there each request again adds at most 2."""
    variant = engine.variant
    config = engine.variants[variant].model.t3.tfmr.config
    layers = config.num_hidden_layers
    sizes = SIZES[variant]
    if prefix_sharing == "off":
        monkeypatch.setattr(T3Batch, "_shared_prefix_plan", lambda self, device: None)
    else:
        if variant != "turbo":
            pytest.skip("standard's 34-position prefix is too short to share (shared_prefix.py)")
        sizes = tuple(size for size in sizes if size >= MIN_SHARED_REQUESTS)
    ops_by_size = {}
    for size in sizes:
        costs = steady_tick_cost(engine, size, monkeypatch)
        print(
            f"{variant}, {size} requests, prefix sharing {prefix_sharing}: (aten ops, host reads, attention calls) per tick {costs}"
        )
        for _ops, reads, sdpa in costs:
            assert reads <= 1, f"{size} requests: {reads} host reads in one tick"
            assert sdpa == layers, f"{size} requests: {sdpa} attention calls for {layers} layers (eager fallback?)"
        ops_by_size[size] = max(ops for ops, _, _ in costs)
    smallest = min(ops_by_size)
    for size, ops in ops_by_size.items():
        added = ops - ops_by_size[smallest]
        assert added <= OPS_PER_ADDED_REQUEST * (size - smallest), (variant, ops_by_size)


def batch_tokens(engine, requests: int, cap: int) -> dict[int, list[int]]:
    """Every request's tokens, decoded together in one batch (the built-in voice for all)."""
    runner = TokensOnly(engine)
    scheduler = Scheduler(runner)
    texts = ["Hello there, this is a test.", "A second, somewhat longer sentence to speak.", "Third one."]
    with torch.inference_mode():
        for i in range(requests):
            request = engine.prepare(engine.variant, texts[i % 3], {"seed": 300 + i, "max_new_tokens": cap})
            scheduler.start(request, False, lambda: False, lambda item: None, lambda: None)
        while scheduler.tick():
            pass
    return runner.recorded


def test_a_shared_voice_prefix_is_read_once_and_the_batch_samples_what_it_samples_without(engine, monkeypatch):
    """Requests of one voice share their prompt prefix's attention (shared_prefix.py) where it is long
    enough to pay (turbo's 376 positions, not standard's 34). Token for token in float32:
    test_batched_exactness; here, under bf16, the first tokens agree with the plain path."""
    plans = []
    original = shared_prefix.attend

    def counting(plan, *args):
        plans.append(plan)
        return original(plan, *args)

    monkeypatch.setattr(shared_prefix, "attend", counting)
    shared = batch_tokens(engine, 6, 30)
    if engine.variant != "turbo":
        assert not plans, "standard's 34-position prefix is too short to share"
        return
    assert plans and all(plan.rows is None and plan.length >= 376 for plan in plans), plans[:1]
    monkeypatch.setattr(T3Batch, "_shared_prefix_plan", lambda self, device: None)
    plans.clear()
    plain = batch_tokens(engine, 6, 30)
    assert not plans
    agreed = [next((i for i, (x, y) in enumerate(zip(shared[s], plain[s])) if x != y), len(plain[s])) for s in plain]
    print(f"shared prefix against plain attention, bf16: tokens identical before any divergence {agreed}")
    # bf16 random weights sit near ties, so a flip may come late; an early one would be a wrong merge.
    assert min(agreed) >= 10, agreed
