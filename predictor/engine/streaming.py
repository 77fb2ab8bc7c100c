"""Incremental waveform generation: S3Gen run chunk by chunk as speech tokens arrive.

Upstream turns all tokens into a waveform at once. Here, following the approach CosyVoice2 uses
with the same flow-matching decoder and HiFT vocoder:
- the flow decoder is re-run over the prompt and every token so far, holding back the last
  `pre_lookahead_len` tokens (their mel needs look-ahead), and only the new mel frames are kept;
- the flow's starting noise is fixed per mel position (drawn in fixed-size blocks from the
  request's noise generator), so re-running it does not re-roll frames already emitted;
- HiFT vocodes each new stretch of mel with a few frames of the previous mel in front, and the
  excitation (source) signal of that overlap, so its sine phase continues; the overlap is
  cross-faded with the tail held back from the previous chunk;
- the watermark is applied over a window reaching back into the previous chunk, and the seam
  between two watermarked windows is cross-faded too.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from chatterbox.models.s3gen.s3gen import S3Token2Mel

SAMPLES_PER_FRAME = 480  # 24 kHz, 50 mel frames per second (2 per speech token)
OVERLAP_FRAMES = 8  # mel frames HiFT re-renders at each seam
OVERLAP_SAMPLES = OVERLAP_FRAMES * SAMPLES_PER_FRAME
NOISE_BLOCK_FRAMES = 64
WATERMARK_CONTEXT = 4800  # 0.2 s of earlier audio in front of each watermark window
WATERMARK_FADE = 480  # 20 ms seam between watermark windows


def _raised_cosine(length: int) -> tuple[np.ndarray, np.ndarray]:
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, length, dtype=np.float64))).astype(np.float32)
    return ramp, 1.0 - ramp


class PositionalNoise:
    """Standard-normal noise per mel frame, identical however many frames are asked for at a time."""

    def __init__(self, seed: int, device: str, dtype: torch.dtype):
        self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self._device, self._dtype = device, dtype
        self._frames = torch.zeros(80, 0)

    def take(self, frames: int) -> torch.Tensor:
        while self._frames.shape[1] < frames:
            block = torch.randn(NOISE_BLOCK_FRAMES, 80, generator=self._generator).T
            self._frames = torch.cat([self._frames, block], dim=1)
        return self._frames[:, :frames].unsqueeze(0).to(device=self._device, dtype=self._dtype)


class ChunkedVocoder:
    """Speech tokens in, raw (not yet watermarked) audio chunks out, for one text piece."""

    def __init__(
        self,
        s3gen,
        conds_gen: dict,
        noise_seed: int,
        *,
        meanflow: bool,
        silence_token: int | None,
    ):
        self.s3gen = s3gen
        self.ref = conds_gen
        self.meanflow = meanflow
        self.silence_token = silence_token  # turbo appends three silence tokens at the end, as upstream
        self.timesteps = 2 if meanflow else 10
        self.lookahead = s3gen.flow.pre_lookahead_len
        self.noise = PositionalNoise(noise_seed, s3gen.device, s3gen.dtype)
        self.noise_seed = noise_seed
        self.vocoder_calls = 0
        # The flow's frames: two per prompt token and per (non-look-ahead) speech token.
        self.prompt_tokens = int(conds_gen["prompt_token"].shape[1])
        self.tokens: list[int] = []
        self.mel_frames_done = 0
        self.mel_tail: torch.Tensor | None = None  # last OVERLAP_FRAMES of mel already vocoded
        self.source_tail: torch.Tensor | None = None
        self.speech_tail: np.ndarray | None = None  # rendered but not yet emitted
        self.first = True

    def _mel(self, tokens: list[int], finalize: bool) -> torch.Tensor:
        """Mel for `tokens` (prompt excluded); without finalize, the last `lookahead` tokens' frames
        are dropped, since they were made without look-ahead. (Upstream's own finalize=False path
        trims the encoder output but not its mask, and fails.)"""
        noise = self.noise.take(2 * (self.prompt_tokens + len(tokens)))
        speech = torch.tensor([tokens], dtype=torch.long, device=self.s3gen.device)
        mel = S3Token2Mel.forward(
            self.s3gen,
            speech,
            ref_wav=None,
            ref_sr=None,
            ref_dict=self.ref,
            n_cfm_timesteps=self.timesteps,
            finalize=True,
            noised_mels=noise,
        )
        return mel if finalize else mel[:, :, : mel.shape[2] - 2 * self.lookahead]

    def _vocode(self, mel: torch.Tensor, finalize: bool) -> np.ndarray:
        if self.mel_tail is not None:
            mel = torch.cat([self.mel_tail, mel], dim=2)
        cache = self.source_tail if self.source_tail is not None else torch.zeros(1, 1, 0, device=mel.device)
        # HiFT's excitation draws from the global RNG: seed it per call so that the same request
        # streams the same audio every time.
        torch.manual_seed((self.noise_seed * 7919 + self.vocoder_calls) % 2**63)
        self.vocoder_calls += 1
        speech, source = self.s3gen.mel2wav.inference(speech_feat=mel, cache_source=cache)
        if self.first:
            speech[:, : len(self.s3gen.trim_fade)] *= self.s3gen.trim_fade  # upstream's fade-in
            self.first = False
        self.mel_tail = mel[:, :, -OVERLAP_FRAMES:]
        self.source_tail = source[:, :, -OVERLAP_SAMPLES:]
        audio = speech.squeeze(0).detach().cpu().numpy().astype(np.float32)
        if self.speech_tail is not None:
            fade_in, fade_out = _raised_cosine(len(self.speech_tail))
            audio[: len(self.speech_tail)] = audio[: len(self.speech_tail)] * fade_in + self.speech_tail * fade_out
        if finalize:
            self.speech_tail = None
            return audio
        self.speech_tail = audio[-OVERLAP_SAMPLES:].copy()
        return audio[:-OVERLAP_SAMPLES]

    def push(self, new_tokens: list[int]) -> np.ndarray | None:
        """Add tokens; return newly final audio (None while there is not enough look-ahead)."""
        self.tokens.extend(new_tokens)
        usable = len(self.tokens) - self.lookahead
        if 2 * usable - self.mel_frames_done <= OVERLAP_FRAMES:
            return None
        with torch.inference_mode():
            mel = self._mel(self.tokens, finalize=False)
            new = mel[:, :, self.mel_frames_done :]
            self.mel_frames_done = mel.shape[2]
            return self._vocode(new, finalize=False)

    def finish(self) -> np.ndarray:
        tokens = list(self.tokens)
        if self.silence_token is not None:
            tokens += [self.silence_token] * 3
        with torch.inference_mode():
            if not tokens:
                return self.speech_tail if self.speech_tail is not None else np.zeros(0, dtype=np.float32)
            mel = self._mel(tokens, finalize=True)
            new = mel[:, :, self.mel_frames_done :]
            self.mel_frames_done = mel.shape[2]
            if new.shape[2] == 0:
                tail, self.speech_tail = self.speech_tail, None
                return tail if tail is not None else np.zeros(0, dtype=np.float32)
            return self._vocode(new, finalize=True)

    def render_whole(self, tokens: list[int]) -> np.ndarray:
        """The same tokens in one pass with the same noise: the non-streamed rendering streaming approximates."""
        if self.silence_token is not None:
            tokens = list(tokens) + [self.silence_token] * 3
        with torch.inference_mode():
            mel = self._mel(tokens, finalize=True)
            speech, _ = self.s3gen.mel2wav.inference(
                speech_feat=mel, cache_source=torch.zeros(1, 1, 0, device=mel.device)
            )
            speech[:, : len(self.s3gen.trim_fade)] *= self.s3gen.trim_fade
        return speech.squeeze(0).detach().cpu().numpy().astype(np.float32)


class StreamWatermarker:
    """Watermarks a stream chunk by chunk: each window reaches back into audio already emitted, and
    the last few milliseconds wait for the next window so that the seam between two watermarked
    renderings of the same samples can be cross-faded."""

    def __init__(self, watermarker, sample_rate: int):
        self.watermarker = watermarker
        self.sample_rate = sample_rate
        self.raw = np.zeros(0, dtype=np.float32)  # raw samples from `raw_offset` on
        self.raw_offset = 0
        self.emitted = 0  # samples of the stream emitted so far
        self.pending: np.ndarray | None = None  # watermarked samples from `emitted` on, held back

    def push(self, raw_chunk: np.ndarray, final: bool) -> np.ndarray:
        self.raw = np.concatenate([self.raw, raw_chunk.astype(np.float32)])
        window_start = max(self.raw_offset, self.emitted - WATERMARK_CONTEXT)
        window = self.raw[window_start - self.raw_offset :]
        if len(window) == 0:
            return np.zeros(0, dtype=np.float32)
        marked = np.asarray(self.watermarker.apply_watermark(window, sample_rate=self.sample_rate), dtype=np.float32)
        fresh = marked[self.emitted - window_start :].copy()
        if self.pending is not None:
            overlap = min(len(self.pending), len(fresh))
            fade_in, fade_out = _raised_cosine(overlap)
            fresh[:overlap] = fresh[:overlap] * fade_in + self.pending[:overlap] * fade_out
        hold = 0 if final else min(WATERMARK_FADE, len(fresh))
        out, self.pending = fresh[: len(fresh) - hold], (fresh[len(fresh) - hold :] if hold else None)
        self.emitted += len(out)
        keep_from = max(self.raw_offset, self.emitted - WATERMARK_CONTEXT)
        self.raw = self.raw[keep_from - self.raw_offset :]
        self.raw_offset = keep_from
        return out


def stream_piece(
    token_stream: Iterator[int],
    vocoder: ChunkedVocoder,
    watermark: StreamWatermarker,
    schedule: tuple[int, ...],
    speech_vocab_size: int,
    cancelled,
) -> Iterator[tuple[np.ndarray, int, bool]]:
    """Yield (watermarked audio, speech tokens behind it, whether the piece is done) as tokens arrive. Chunk sizes follow
    `schedule` (in speech tokens, the last size repeating): a small first chunk, larger later ones."""
    pending: list[int] = []
    tokens_behind = 0
    chunk_index = 0
    for token in token_stream:
        if cancelled():
            return
        if token >= speech_vocab_size:
            continue
        pending.append(token)
        target = schedule[min(chunk_index, len(schedule) - 1)]
        if chunk_index == 0:
            target += vocoder.lookahead  # the first chunk's last tokens are look-ahead only
        if len(pending) < target:
            continue
        audio = vocoder.push(pending)
        tokens_behind += len(pending)
        pending = []
        if audio is not None and len(audio):
            chunk_index += 1
            yield watermark.push(audio, final=False), tokens_behind, False
            tokens_behind = 0
    if cancelled():
        return
    vocoder.tokens.extend(pending)
    yield watermark.push(vocoder.finish(), final=True), tokens_behind + len(pending), True
