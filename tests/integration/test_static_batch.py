"""The static turbo step (CUDA_GRAPHS=on; predictor/engine/static_batch.py) on a CPU, where it runs
uncaptured: requests joining and leaving its slots at different ticks sample the tokens the eager
batch samples for them alone (float32, random weights). On CUDA the same step is what each graph
replays, so this pins the step's logic; the device kit compares the captured graphs on a GPU."""

from __future__ import annotations

import gc
import logging

import pytest
import torch

from predictor.config import PredictorSettings
from predictor.engine.engine import ChatterboxEngine
from predictor.engine.scheduler import Scheduler
from predictor.engine.static_batch import StaticTurboBatch, buckets
from predictor.engine.voices import voice_from_bytes
from tests.integration.test_batched_exactness import TokensOnly, token_stream

pytestmark = pytest.mark.slow
CAP = 30
TEXTS = ["The first one.", "A second, longer request joins later on.", "Third.", "And the fourth request, last."]
ARRIVALS = [0, 0, 3, 7]  # ticks: two start together, two join mid-flight
PARAMS = [
    {"temperature": 0.8, "top_k": 50, "top_p": 0.9},
    {"temperature": 0.6, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0},
    {"temperature": 1.2, "top_k": 400, "top_p": 0.7, "repetition_penalty": 1.5},
    {"max_new_tokens": 12},  # leaves early: the last member's slot moves into its place
]


@pytest.fixture(scope="module")
def warm_up_log() -> list[str]:
    return []


@pytest.fixture(scope="module")
def engine(weights_dir, warm_up_log):
    settings = PredictorSettings(
        model_dir=str(weights_dir),
        load_standard=False,
        load_turbo=True,
        dtype="float32",
        cuda_graphs="on",
        cuda_graph_batch_capacity=4,
        max_new_tokens=200,
        warm_up="on",  # auto warms up on CUDA only
    )
    engine = ChatterboxEngine(settings)
    handler = logging.Handler()
    handler.emit = lambda record: warm_up_log.append(record.getMessage())  # type: ignore[method-assign]
    engine_logger = logging.getLogger("predictor.engine.engine")
    level = engine_logger.level
    engine_logger.addHandler(handler)
    engine_logger.setLevel(logging.INFO)
    try:
        engine.load()
    finally:
        engine_logger.removeHandler(handler)
        engine_logger.setLevel(level)
    yield engine
    engine.variants.clear()
    gc.collect()


def test_warm_up_synthesises_before_the_variant_counts_as_loaded(engine, warm_up_log):
    warmed = next(i for i, message in enumerate(warm_up_log) if message.startswith("turbo warmed up"))
    loaded = next(i for i, message in enumerate(warm_up_log) if message.startswith("turbo model loaded"))
    assert warmed < loaded and engine.ready


def test_buckets_cover_every_size_up_to_the_capacity():
    assert buckets(64) == (1, 2, 4, 8, 16, 32, 64)
    assert buckets(24) == (1, 2, 4, 8, 16, 24)


def test_static_slots_sample_what_the_eager_batch_samples_alone(engine, voices_dir):
    batch = engine.variants["turbo"].batch
    assert isinstance(batch, StaticTurboBatch) and not batch.graphs  # a CPU captures nothing
    voice = voice_from_bytes((voices_dir / "alice.wav").read_bytes())
    requests = [
        engine.prepare("turbo", text, {"max_new_tokens": CAP, **params, "seed": 40 + i}, voice)
        for i, (text, params) in enumerate(zip(TEXTS, PARAMS, strict=True))
    ]
    with torch.inference_mode():
        alone = {request.seed: list(token_stream(engine, request)) for request in requests}
    runner = TokensOnly(engine)
    scheduler = Scheduler(runner)
    sizes = []
    with torch.inference_mode():
        for tick in range(1000):
            for request, arrival in zip(requests, ARRIVALS, strict=True):
                if arrival == tick:
                    scheduler.start(request, False, lambda: False, lambda item: None, lambda: None)
            sizes.append(len(batch))
            if not scheduler.tick() and tick > max(ARRIVALS):
                break
    assert max(sizes) == len(requests) and batch.cache is None
    assert [len(tokens) for tokens in alone.values()] == [CAP, CAP, CAP, 12]
    for seed, tokens in alone.items():
        assert runner.recorded[seed] == tokens, seed


def test_a_prompt_that_does_not_fit_its_slot_fails_alone(engine):
    batch = engine.variants["turbo"].batch
    request = engine.prepare("turbo", "Too long for the slot.", {"max_new_tokens": 200, "seed": 1})
    batch.positions, positions = 100, batch.positions
    failures = []
    try:
        scheduler = Scheduler(engine)
        with torch.inference_mode():
            scheduler.start(request, False, lambda: False, failures.append, lambda: None)
            while scheduler.tick():
                pass
    finally:
        batch.positions = positions
    assert len(failures) == 1 and "positions" in str(failures[0]), failures
