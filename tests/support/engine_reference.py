"""Reference renderings the streaming tests compare against (test-only, so kept out of the runtime package)."""

from __future__ import annotations

import numpy as np
import torch
from chatterbox.models.s3gen.s3gen import S3Token2Mel

from predictor.engine.engine import ChatterboxEngine, PreparedRequest
from predictor.engine.streaming import ChunkedVocoder


def synthesize(engine: ChatterboxEngine, request: PreparedRequest) -> tuple[np.ndarray, int]:
    """The whole utterance, unstreamed: (float32 samples at 24 kHz, speech tokens)."""
    parts = list(engine.chunks(request))
    samples = np.concatenate([c.samples for c in parts]) if parts else np.zeros(0, dtype=np.float32)
    return samples, sum(c.speech_tokens for c in parts)


def render_whole(vocoder: ChunkedVocoder, tokens: list[int]) -> np.ndarray:
    """The same tokens in one pass behind the whole prompt, with the same noise: the non-streamed
    rendering streaming approximates."""
    if vocoder.silence_token is not None:
        tokens = list(tokens) + [vocoder.silence_token] * 3
    with torch.inference_mode():
        noise = vocoder.noise.take(2 * (vocoder.prompt_tokens + len(tokens)))
        mel = S3Token2Mel.forward(
            vocoder.s3gen,
            vocoder._tensor(tokens),
            ref_wav=None,
            ref_sr=None,
            ref_dict=dict(vocoder.ref),
            n_cfm_timesteps=vocoder.timesteps,
            finalize=True,
            noised_mels=noise,
        )
        speech, _ = vocoder.s3gen.mel2wav.inference(
            speech_feat=mel, cache_source=torch.zeros(1, 1, 0, device=mel.device)
        )
        speech[:, : len(vocoder.s3gen.trim_fade)] *= vocoder.s3gen.trim_fade
    return speech.squeeze(0).detach().cpu().numpy().astype(np.float32)
