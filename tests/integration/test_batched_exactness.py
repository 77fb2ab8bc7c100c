"""Exactness under batching, on the real engine (random-weight checkpoints, float32): 8 requests with
different voices, seeds and parameters, arriving at different ticks of the real scheduler so that
they join a T3 batch already in flight (and leave it at different times), each sample the same
speech tokens as when decoded alone with the same seed.

The scheduler runs the real tasks, T3Batch and decoders; only the vocoder is left out (each task
consumes its tokens and records them), since vocoder work is not batched and does not touch tokens.
A batch differs from a lone request only by float rounding (masked positions weigh exactly zero), so
a token could in principle flip where two candidates are within rounding of each other: the test
reports how many tokens matched and allows at most MAX_FLIPPED_REQUESTS requests to diverge.

A second test vocodes: streamed requests share each flow encoder and ODE step pass, and each gets
the audio it gets alone, within float rounding.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from predictor.config import PredictorSettings
from predictor.engine import shared_prefix
from predictor.engine.attention import IMPLEMENTATION
from predictor.engine.engine import ChatterboxEngine
from predictor.engine.scheduler import END, Scheduler
from predictor.engine.voices import BUILTIN_VOICE, voice_from_bytes

pytestmark = pytest.mark.slow
CAP = 42  # tokens per request: at least 40 each (the bar), with room for a rare early stop token
MAX_FLIPPED_REQUESTS = 0  # float32: no flip seen (turbo, 3 requests joining mid-flight: 36/36 tokens identical)
VOCODED_CAP = 30  # tokens per request in the vocoding test: a few chunks each
MAX_VOCODED_DIFFERENCE = 1e-3  # float32 rounding through the flow's ODE steps and HiFT, in full-scale samples
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A short one.",
    "Batching lets many requests share every forward pass of the model, which saves a lot of time.",
    "How are you today?",
    "Seven silver swans swam silently seaward.",
    "Numbers like twenty one and forty two are spoken too.",
    "Bonjour, ceci est un essai.",
    "Here is the last request of the batch, arriving late.",
]
# Arrival tick of each request: some start together, others join while the batch runs.
ARRIVALS = [0, 0, 2, 5, 5, 9, 14, 20]
VARIANT_PARAMS = {
    "standard": lambda i: {
        "exaggeration": 0.3 + 0.1 * i,
        "cfg_weight": 0.3 + 0.05 * i,
        "temperature": 0.6 + 0.05 * i,
        "min_p": 0.02 * (i % 3),
        "repetition_penalty": 1.1 + 0.1 * i,
    },
    "turbo": lambda i: {"temperature": 0.6 + 0.05 * i, "top_k": 50 + 100 * i, "top_p": 0.8 + 0.02 * i},
    "multilingual": lambda i: {
        "exaggeration": 0.4,
        "cfg_weight": 0.5,
        "temperature": 0.7 + 0.03 * i,
        "repetition_penalty": 1.5,
        "language_id": ["en", "fr", "de", "es"][i % 4],
    },
}


@pytest.fixture(scope="module", params=["turbo", "standard", "multilingual"])
def engine(request, weights_dir):
    variant = request.param
    settings = PredictorSettings(
        model_dir=str(weights_dir),
        load_standard=variant == "standard",
        load_turbo=variant == "turbo",
        load_multilingual=variant == "multilingual",
        dtype="float32",
        prompt_prefix_cache_size=8,  # requests prefill on their voice's cached prompt prefix
    )
    engine = ChatterboxEngine(settings)
    engine.load()
    engine.variant = variant
    yield engine
    engine.variants.clear()
    gc.collect()


def voices(voices_dir):
    files = [voice_from_bytes((voices_dir / name).read_bytes()) for name in ("alice.wav", "bob.wav")]
    return [BUILTIN_VOICE, files[0], files[1]]


def token_stream(engine, request):
    loaded = engine.variants[request.variant]
    generator = torch.Generator(device=engine.device).manual_seed(request.seed)
    t3_cond = engine._t3_cond(loaded, request)
    prefix = engine._prefix_lookup(loaded, request)
    return engine._speech_tokens(loaded, request.pieces[0], t3_cond, request.params, generator, prefix)


class TokensOnly:
    """The engine as the scheduler sees it, with chunks() that decode and record tokens only."""

    def __init__(self, engine):
        self.engine = engine
        self.variants = engine.variants
        self.recorded: dict[int, list[int]] = {}

    def chunks(self, request, cancelled, stream):
        tokens = self.recorded.setdefault(request.seed, [])
        for token in token_stream(self.engine, request):
            tokens.append(token)
        yield from ()


@pytest.mark.parametrize("attention", ["sdpa", "shared prefix"])
def test_batched_requests_sample_the_tokens_they_sample_alone(engine, voices_dir, attention, monkeypatch):
    """With "shared prefix", the batch's turbo backbone attends through attention.py's float32
    function, so that requests of the same voice read their prompt prefix once (shared_prefix.py: on
    a CPU in bf16 that is the default; here in float32, where its sums must give the same tokens)."""
    variant = engine.variant
    if attention == "shared prefix":
        if variant != "turbo":
            pytest.skip("only turbo's prompt prefix is long enough to be shared (shared_prefix.py)")
        plans = []
        monkeypatch.setattr(engine.variants[variant].model.t3.tfmr.config, "_attn_implementation", IMPLEMENTATION)
        monkeypatch.setattr(shared_prefix, "attend", spying(shared_prefix.attend, plans))
    references = voices(voices_dir)
    requests = []
    for i, text in enumerate(TEXTS):
        params = {**VARIANT_PARAMS[variant](i), "seed": 1000 + 17 * i, "max_new_tokens": CAP}
        voice = references[1 + i % 2] if variant == "turbo" else references[i % 3]  # turbo: references over 5 s
        requests.append(engine.prepare(variant, text, params, voice))
        assert len(requests[-1].pieces) == 1

    with torch.inference_mode():
        alone = {request.seed: list(token_stream(engine, request)) for request in requests}

    runner = TokensOnly(engine)
    scheduler = Scheduler(runner)
    batch = engine.variants[variant].batch
    sizes = []
    with torch.inference_mode():
        for tick in range(10_000):
            for request, arrival in zip(requests, ARRIVALS, strict=True):
                if arrival == tick:
                    scheduler.start(request, False, lambda: False, lambda item: None, lambda: None)
            sizes.append(len(batch))
            if not scheduler.tick() and tick > max(ARRIVALS):
                break
    assert len(batch) == 0 and batch.cache is None  # everyone left

    assert max(sizes) >= 5, f"requests should have overlapped in the batch (sizes seen: {sorted(set(sizes))})"
    lengths = [len(tokens) for tokens in alone.values()]
    assert min(lengths) >= 40 or variant == "multilingual", lengths  # the alignment analyzer may stop early
    flipped = [seed for seed, tokens in alone.items() if runner.recorded[seed] != tokens]
    matched = sum(
        next((k for k, (a, b) in enumerate(zip(tokens, runner.recorded[seed])) if a != b), len(tokens))
        for seed, tokens in alone.items()
    )
    print(f"{variant}: {matched}/{sum(lengths)} tokens identical before any divergence; flipped requests {flipped}")
    assert len(flipped) <= MAX_FLIPPED_REQUESTS, (flipped, matched, sum(lengths))
    if attention == "shared prefix":
        assert plans and any(plan.rows is not None for plan in plans), "two voices: a group smaller than the batch"


def spying(attend, plans: list):
    def recording(plan, *args):
        plans.append(plan)
        return attend(plan, *args)

    return recording


def test_batched_vocoding_renders_what_each_request_renders_alone(engine, voices_dir):
    """Streamed requests vocoding at the same time share each flow encoder call and each flow ODE step
    (flow_batching.py): each still gets the audio it gets alone, up to the float rounding of a
    differently shaped pass."""
    variant = engine.variant
    if variant == "multilingual":
        pytest.skip("multilingual vocodes with standard's S3Gen, which the standard case covers")
    references = voices(voices_dir)
    requests = []
    for i, text in enumerate(TEXTS[:3]):
        params = {**VARIANT_PARAMS[variant](i), "seed": 2000 + i, "max_new_tokens": VOCODED_CAP}
        voice = references[1 + i % 2] if variant == "turbo" else references[i % 3]
        requests.append(engine.prepare(variant, text, params, voice))

    def joined(chunks) -> np.ndarray:
        return np.concatenate([chunk.samples for chunk in chunks])

    with torch.inference_mode():
        alone = [joined(engine.chunks(request, stream=True)) for request in requests]

    loaded = engine.variants[variant]
    # One request brings one row to an encoder call, two (the CFG rows) to an estimator call.
    batched = {"encoder": (loaded.flow_encoder, 1), "estimator": (loaded.flow_estimator, 2)}
    before = {name: (calls.calls, calls.rows_served) for name, (calls, _) in batched.items()}
    delivered: dict[int, list] = {i: [] for i in range(len(requests))}
    scheduler = Scheduler(engine)
    with torch.inference_mode():
        for i, request in enumerate(requests):
            scheduler.start(request, True, lambda: False, delivered[i].append, lambda: None)
        while scheduler.tick():
            pass
    for name, (calls, rows_per_request) in batched.items():
        passes, rows = calls.calls - before[name][0], calls.rows_served - before[name][1]
        assert rows > rows_per_request * passes, f"{name} calls should have shared passes: {rows} rows in {passes}"
    for i, reference in enumerate(alone):
        items = delivered[i]
        assert items[-1] is END, items[-1]
        audio = joined(items[:-1])
        assert len(audio) == len(reference)
        difference = float(np.max(np.abs(audio - reference)))
        print(f"{variant} request {i}: {len(audio)} samples, max |batched - alone| = {difference:.2e}")
        assert difference <= MAX_VOCODED_DIFFERENCE, difference
