"""The bf16 path on the real engine (random-weight checkpoints): T3's backbone weights stored in bf16,
and requests that run through it, alone and streamed, produce the audio they
should. (Conformance pins float32; how far bf16 moves tokens and audio is the bench's precision table.)"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from predictor.config import PredictorSettings
from predictor.engine.engine import ChatterboxEngine
from predictor.engine.precision import is_linear_layer

pytestmark = pytest.mark.slow
TOKENS = 12


@pytest.fixture(scope="module", params=["turbo", "standard"])
def engine(request, weights_dir):
    settings = PredictorSettings(
        model_dir=str(weights_dir),
        load_standard=request.param == "standard",
        load_turbo=request.param == "turbo",
        dtype="bfloat16",
        prompt_prefix_cache_size=8,
    )
    engine = ChatterboxEngine(settings)
    engine.load()
    engine.variant = request.param
    yield engine
    engine.variants.clear()
    gc.collect()


def test_t3_backbone_and_head_weights_are_stored_in_bf16_and_the_rest_in_float32(engine):
    t3 = engine.variants[engine.variant].model.t3
    linear = [m for m in t3.tfmr.modules() if is_linear_layer(m)]
    assert linear and all(m.weight.dtype == torch.bfloat16 for m in linear)
    assert t3.speech_head.weight.dtype == torch.bfloat16  # as autocast computed it; sampled in float32
    assert t3.speech_emb.weight.dtype == torch.float32


def test_a_bf16_request_gives_full_length_finite_audio_streamed_or_not(engine):
    request = engine.prepare(engine.variant, "Reduced precision still speaks.", {"seed": 5, "max_new_tokens": TOKENS})
    whole = list(engine.chunks(request, stream=False))
    streamed = list(engine.chunks(request, stream=True))
    tokens = sum(c.speech_tokens for c in whole)
    assert 0 < tokens <= TOKENS and sum(c.speech_tokens for c in streamed) == tokens  # random weights may stop early
    for chunks in (whole, streamed):
        audio = np.concatenate([c.samples for c in chunks])
        assert audio.dtype == np.float32 and np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert sum(len(c.samples) for c in streamed) == sum(len(c.samples) for c in whole)
    # The prompt prefix was kept for the next request of the voice.
    prefixes = engine.variants[engine.variant].prefixes
    assert len(prefixes) == 1 and prefixes.hits >= 1


def test_hift_convolutions_run_in_bf16_close_to_float32(engine):
    """Same mel, same excitation: HiFT's bf16 convolutions land far closer to float32 than two
    float32 renderings with different excitation noise do (about -19 dB apart, `make bench`)."""
    hift = engine.variants[engine.variant].model.s3gen.mel2wav
    mel = torch.randn(1, 80, 60, generator=torch.Generator().manual_seed(2)) - 4
    with torch.inference_mode():
        fast, source = hift.inference(speech_feat=mel)
        exact = type(hift).decode(hift, x=mel, s=source)  # the class's decode: no autocast, float32
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    distance_db = 10 * torch.log10(((fast - exact) ** 2).mean() / (exact**2).mean()).item()
    assert not torch.equal(fast, exact)  # bf16 really ran
    assert distance_db < -25, distance_db
