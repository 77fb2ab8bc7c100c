"""What a steady scheduler tick costs the host, counted in aten ops and reads of device values on the
real engine (random weights, DTYPE=auto, the default fast sampler): the counts a GPU pays in kernel
launches and queue drains (tests/support/dispatch_count.py).

- a tick reads the device at most once, however many requests share it;
- each request added to the batch adds at most 2 aten ops to the tick;
- standard's and turbo's shared forward runs torch's SDPA in every layer, never eager attention.
"""

from __future__ import annotations

import gc

import pytest
import torch

from predictor.config import PredictorSettings
from predictor.engine.engine import ChatterboxEngine
from predictor.engine.scheduler import Scheduler
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


def steady_tick_cost(engine, requests: int) -> list[tuple[int, int, int]]:
    """(aten ops, host reads, SDPA calls) of each counted tick with `requests` in the T3 batch."""
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
            with counted() as (ops, reads):
                scheduler.tick()
            costs.append((ops.total, host_reads(ops, reads), ops.matching("scaled_dot_product")))
        assert len(batch) == requests  # steady: nobody joined or left while counted
        while scheduler.tick():
            pass
    return costs


def test_a_steady_tick_costs_the_host_the_same_whatever_the_batch(engine):
    variant = engine.variant
    config = engine.variants[variant].model.t3.tfmr.config
    layers = config.num_hidden_layers
    ops_by_size = {}
    for size in SIZES[variant]:
        costs = steady_tick_cost(engine, size)
        print(f"{variant}, {size} requests: (aten ops, host reads, SDPA calls) per tick {costs}")
        for _ops, reads, sdpa in costs:
            assert reads <= 1, f"{size} requests: {reads} host reads in one tick"
            assert sdpa == layers, f"{size} requests: {sdpa} SDPA calls for {layers} layers (eager fallback?)"
        ops_by_size[size] = max(ops for ops, _, _ in costs)
    smallest = min(ops_by_size)
    for size, ops in ops_by_size.items():
        added = ops - ops_by_size[smallest]
        assert added <= OPS_PER_ADDED_REQUEST * (size - smallest), (variant, ops_by_size)
