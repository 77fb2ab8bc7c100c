"""Conformance: for the same seed, parameters, weights and token cap, the predictor's audio equals,
sample for sample, what chatterbox's own generate() produces when called the way users call it
(voice as audio_prompt_path). The only change to upstream is the token cap, which upstream hard-codes.
That is the predictor's upstream-exact mode, DTYPE=float32 with SAMPLER=upstream; the default fast
sampler draws from the same distributions (tests/unit/test_sampling.py), not the same samples.
Also: two concurrent requests with different voices each get exactly what they get alone."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
import torch

from contract.variants import VARIANT_NAMES
from scripts.processes import ManagedProcess
from scripts.random_weights import write_reference_wav
from scripts.upstream import load_upstream, upstream_generate
from tests.support.servers import start_predictor
from tests.support.v2_helpers import http_infer

pytestmark = pytest.mark.slow
CAP = 5
BATCHED_AUDIO_ATOL = 1e-4  # full-scale samples; measured: 1.8e-7 for two standard requests sharing flow passes


CASES = {
    "standard": {
        "exaggeration": 0.8,
        "cfg_weight": 0.4,
        "temperature": 0.7,
        "top_p": 0.9,
        "min_p": 0.1,
        "repetition_penalty": 1.3,
    },
    "turbo": {"temperature": 0.9, "top_p": 0.8, "top_k": 50, "repetition_penalty": 1.1},
    "multilingual": {
        "exaggeration": 0.3,
        "cfg_weight": 0.6,
        "temperature": 0.75,
        "top_p": 0.95,
        "min_p": 0.02,
        "repetition_penalty": 1.8,
        "language_id": "fr",
    },
}


@pytest.fixture(scope="module")
def upstream_predictor(weights_dir, voices_dir):
    """Given a variant, a predictor in the upstream-exact mode (float32, as every test predictor, and
    upstream's own sampler) with only that variant loaded, one at a time: a float32 predictor with all
    three holds about 10 GB, and the session's predictor is running beside it."""
    running: dict[str, ManagedProcess] = {}

    def predictor_for(variant: str) -> ManagedProcess:
        if variant not in running:
            for process in running.values():
                process.stop()
            running.clear()
            loads = {f"LOAD_{name.upper()}": str(name == variant).lower() for name in VARIANT_NAMES}
            running[variant] = start_predictor(weights_dir, voices_dir, SAMPLER="upstream", **loads)
        return running[variant]

    yield predictor_for
    for process in running.values():
        process.stop()


@pytest.mark.parametrize("variant", ["standard", "turbo", "multilingual"])
def test_predictor_equals_upstream_generate(upstream_predictor, weights_dir, voices_dir, variant):
    model = load_upstream(variant, weights_dir, "cpu")
    params = CASES[variant]
    text = "Bonjour tout le monde." if variant == "multilingual" else "Hello world, this is a test."
    try:
        torch.manual_seed(1234)
        expected = upstream_generate(
            model, variant, text, CAP, audio_prompt_path=str(voices_dir / "alice.wav"), **params
        )
    finally:
        del model
        gc.collect()
    ours = http_infer(
        upstream_predictor(variant).http_url,
        variant,
        text,
        {**params, "voice": "alice.wav", "seed": 1234, "max_new_tokens": CAP},
    ).as_numpy("audio")
    assert ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)


def test_concurrent_requests_with_different_voices_get_what_they_get_alone(predictor, voices_dir):
    # Voices no other test has used (so each request prepares its own conditionals while the other one
    # runs), and enough tokens for several engine steps: the two requests really overlap in time.
    write_reference_wav(voices_dir / "overlap-alice.wav", seconds=4.0, seed=101)
    write_reference_wav(voices_dir / "overlap-bob.wav", seconds=4.5, seed=102)
    requests_ = {
        "alice": ("The first voice speaks.", {"voice": "overlap-alice.wav", "seed": 1, "max_new_tokens": 40}),
        "bob": (
            "A second voice answers.",
            {"voice": "overlap-bob.wav", "seed": 2, "max_new_tokens": 40, "exaggeration": 1.2},
        ),
    }
    together: dict[str, np.ndarray] = {}
    tokens_together: dict[str, int] = {}
    spans: dict[str, tuple[float, float]] = {}
    barrier = threading.Barrier(len(requests_))

    def run(name: str) -> None:
        text, params = requests_[name]
        barrier.wait()
        started = time.monotonic()
        result = http_infer(predictor.http_url, "standard", text, params)
        together[name] = result.as_numpy("audio")
        tokens_together[name] = result.get_response()["parameters"]["speech_tokens"]
        spans[name] = (started, time.monotonic())

    threads = [threading.Thread(target=run, args=(name,)) for name in requests_]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (a_start, a_end), (b_start, b_end) = spans["alice"], spans["bob"]
    overlap = min(a_end, b_end) - max(a_start, b_start)
    # Each ran for a while with the other in flight: at least a third of the shorter one.
    assert overlap > 0.33 * min(a_end - a_start, b_end - b_start), spans
    alone = {
        name: http_infer(predictor.http_url, "standard", text, params) for name, (text, params) in requests_.items()
    }
    for name in requests_:
        # The same tokens; the audio within float rounding: their flow ODE steps shared batched passes
        # (predictor/engine/flow_batching.py), whose matmuls round differently from a pass of one.
        assert tokens_together[name] == alone[name].get_response()["parameters"]["speech_tokens"]
        np.testing.assert_allclose(together[name], alone[name].as_numpy("audio"), rtol=0, atol=BATCHED_AUDIO_ATOL)
    assert not np.array_equal(alone["alice"].as_numpy("audio")[:1000], alone["bob"].as_numpy("audio")[:1000])
