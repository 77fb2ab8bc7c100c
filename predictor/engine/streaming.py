"""Incremental waveform generation: S3Gen run chunk by chunk as speech tokens arrive.

Upstream turns all tokens into a waveform at once, behind the whole voice prompt (up to 10 s, 500
mel frames). Here, with the same flow-matching decoder and HiFT vocoder:
- each flow run covers a bounded window: the new tokens, holding back the last `pre_lookahead_len`
  (their mel needs look-ahead), behind at most CONTEXT_TOKENS tokens of left context. Context goes
  in as upstream's prompt does, tokens with their mel as the condition: the end of the voice prompt,
  then the speech already rendered with the mel already emitted, so that the model continues what
  was heard. (Neither the encoder's nor the decoder's output for earlier positions can be reused
  exactly: both attend over the whole sequence, so appending tokens changes them.)
- the flow's starting noise is fixed per mel position (drawn in fixed-size blocks from the
  request's noise generator), the position being that of one pass over prompt + speech;
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
# Mel frames HiFT re-renders at each seam. 4 and 8 measured alike in the streaming quality test (away
# from seams 1.13x and 1.14x the noise floor, standard); 4 holds back two tokens fewer before the first chunk.
OVERLAP_FRAMES = 4
OVERLAP_SAMPLES = OVERLAP_FRAMES * SAMPLES_PER_FRAME
NOISE_BLOCK_FRAMES = 64
WATERMARK_CONTEXT = 4800  # 0.2 s of earlier audio in front of each watermark window
WATERMARK_FADE = 480  # 20 ms seam between watermark windows
# Audio the vocoder and the watermark keep back at each seam, in whole tokens.
HELD_BACK_TOKENS = -(-(OVERLAP_SAMPLES + WATERMARK_FADE) // (2 * SAMPLES_PER_FRAME))
CONTEXT_TOKENS = 50  # left context of each flow run, in tokens (prompt tail, then speech already rendered)
# The first run's context is the voice prompt's tail alone, and the first chunk's flow run is what the
# listener waits for: a shorter one there.
FIRST_CONTEXT_TOKENS = 20


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
    """Speech tokens in, raw (not yet watermarked) audio chunks out, for one text piece.

    Each flow run covers a bounded window: the new tokens (with their look-ahead) behind at most
    `context_tokens` tokens of left context, taken from the end of the voice prompt followed by the
    speech tokens already rendered. Context tokens enter the flow the way upstream's voice prompt
    does, with their mel as the condition: the prompt's own mel, then the mel this stream has
    already emitted, so the model continues what the listener heard. The work per chunk is then
    bounded by the chunk, not by the prompt and the utterance so far.
    """

    def __init__(
        self,
        s3gen,
        conds_gen: dict,
        noise_seed: int,
        *,
        meanflow: bool,
        silence_token: int | None,
        context_tokens: int | None = None,
    ):
        self.s3gen = s3gen
        self.ref = conds_gen
        self.meanflow = meanflow
        self.silence_token = silence_token  # turbo appends three silence tokens at the end, as upstream
        self.timesteps = 2 if meanflow else 10
        self.lookahead = s3gen.flow.pre_lookahead_len
        self.context_tokens = CONTEXT_TOKENS if context_tokens is None else context_tokens
        self.noise = PositionalNoise(noise_seed, s3gen.device, s3gen.dtype)
        self.noise_seed = noise_seed
        self.vocoder_calls = 0
        # Mel frames are numbered as in one pass over prompt + speech: two per token.
        self.prompt_token = conds_gen["prompt_token"].to(device=s3gen.device, dtype=torch.long)
        self.prompt_feat = conds_gen["prompt_feat"].to(device=s3gen.device, dtype=s3gen.dtype)  # (1, frames, 80)
        self.prompt_tokens = int(self.prompt_token.shape[1])
        self.tokens: list[int] = []
        self.mel_frames_done = 0  # speech mel frames rendered so far
        self.mel_emitted: torch.Tensor | None = None  # (1, 80, <= 2 * context) the last rendered speech mel
        self.mel_tail: torch.Tensor | None = None  # last OVERLAP_FRAMES of mel already vocoded
        self.source_tail: torch.Tensor | None = None
        self.speech_tail: np.ndarray | None = None  # rendered but not yet emitted
        self.first = True
        self.flow_runs: list[int] = []  # mel frames of each flow run (context included): the work per chunk

    def _mel(self, tokens: list[int], finalize: bool) -> torch.Tensor:
        """Speech mel frames from `mel_frames_done` on; without finalize, the last `lookahead` tokens'
        frames are dropped, since they were made without look-ahead."""
        done_tokens = self.mel_frames_done // 2
        context = self.context_tokens if done_tokens else min(self.context_tokens, FIRST_CONTEXT_TOKENS)
        speech_context = min(done_tokens, context)
        prompt_context = min(self.prompt_tokens, context - speech_context)
        context_token = [self.prompt_token[:, self.prompt_tokens - prompt_context :]]
        context_feat = [self.prompt_feat[:, self.prompt_feat.shape[1] - 2 * prompt_context :]]
        if speech_context:
            assert self.mel_emitted is not None  # speech frames were rendered, so some were kept
            context_token.append(self._tensor(tokens[done_tokens - speech_context : done_tokens]))
            context_feat.append(self.mel_emitted[:, :, -2 * speech_context :].transpose(1, 2))
        new_tokens = tokens[done_tokens:]
        # The starting noise of each frame is that of its position in one pass over prompt + speech.
        noise = self.noise.take(2 * (self.prompt_tokens + len(tokens)))
        prompt_frames = 2 * self.prompt_tokens
        noise = torch.cat(
            [
                noise[:, :, prompt_frames - 2 * prompt_context : prompt_frames],
                noise[:, :, prompt_frames + 2 * (done_tokens - speech_context) :],
            ],
            dim=2,
        )
        ref = {
            "prompt_token": torch.cat(context_token, dim=1),
            "prompt_token_len": torch.tensor([prompt_context + speech_context], device=self.s3gen.device),
            "prompt_feat": torch.cat(context_feat, dim=1),
            "prompt_feat_len": None,
            "embedding": self.ref["embedding"],
        }
        self.flow_runs.append(noise.shape[2])
        mel = S3Token2Mel.forward(
            self.s3gen,
            self._tensor(new_tokens),
            ref_wav=None,
            ref_sr=None,
            ref_dict=ref,
            n_cfm_timesteps=self.timesteps,
            finalize=True,
            noised_mels=noise,
        )
        if not finalize:
            mel = mel[:, :, : mel.shape[2] - 2 * self.lookahead]
        self.mel_frames_done += mel.shape[2]
        emitted = mel if self.mel_emitted is None else torch.cat([self.mel_emitted, mel], dim=2)
        self.mel_emitted = emitted[:, :, -2 * max(self.context_tokens, 1) :]
        return mel

    def _tensor(self, tokens: list[int]) -> torch.Tensor:
        return torch.tensor([tokens], dtype=torch.long, device=self.s3gen.device)

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
            return self._vocode(self._mel(self.tokens, finalize=False), finalize=False)

    def finish(self) -> np.ndarray:
        tokens = list(self.tokens)
        if self.silence_token is not None:
            tokens += [self.silence_token] * 3
        with torch.inference_mode():
            if len(tokens) * 2 <= self.mel_frames_done:
                tail, self.speech_tail = self.speech_tail, None
                return tail if tail is not None else np.zeros(0, dtype=np.float32)
            return self._vocode(self._mel(tokens, finalize=True), finalize=True)


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
    `schedule` (in T3 steps, the last size repeating): a small first chunk, larger later ones.

    Chunks are counted in T3 steps, not in the speech tokens among them (ids at or above
    `speech_vocab_size` are dropped, as upstream drops them), so that requests decoding in the same
    batch from the same step reach their chunk boundaries together and share their flow passes
    (flow_batching.py). A trained model samples speech tokens only until it stops, so both counts
    agree there; random weights sample dropped ids often (a fifth of standard's vocabulary), and
    counted in speech tokens four standard requests started together drifted apart within their first
    chunk, leaving most flow passes with one request in them."""
    pending: list[int] = []
    steps = 0  # T3 steps since the last chunk
    tokens_behind = 0
    chunk_index = 0
    for token in token_stream:
        if cancelled():
            return
        steps += 1
        if token < speech_vocab_size:
            pending.append(token)
        target = schedule[min(chunk_index, len(schedule) - 1)]
        if chunk_index == 0:
            # The first chunk holds `schedule[0]` steps of audio: its last tokens are look-ahead only,
            # and the vocoder and the watermark hold back a seam's worth for the next chunk.
            target += vocoder.lookahead + HELD_BACK_TOKENS
        if steps < target or not pending:
            continue
        audio = vocoder.push(pending)
        tokens_behind += len(pending)
        pending, steps = [], 0
        if audio is not None and len(audio):
            chunk_index += 1
            yield watermark.push(audio, final=False), tokens_behind, False
            tokens_behind = 0
    if cancelled():
        return
    vocoder.tokens.extend(pending)
    yield watermark.push(vocoder.finish(), final=True), tokens_behind + len(pending), True
