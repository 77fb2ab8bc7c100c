"""One request's speech-token decoding state, for T3 forward passes it shares with other requests.

The sampling follows upstream's T3.inference (standard and multilingual, with classifier-free
guidance) and T3.inference_turbo step for step, so that with the same seed a request samples the same
tokens. What differs: the prompt is prefilled alone, then every further forward pass is made by a
`T3Batch` (batching.py) for all requests of the variant at once; the decoder only samples from the
logits it is handed and says what to feed next. Its KV cache, alignment analysis and generator are
its own, and the token cap is the request's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from chatterbox.models.t3.inference.alignment_stream_analyzer import LLAMA_ALIGNED_HEADS, AlignmentStreamAnalyzer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from . import sampling
from .params import SynthesisParams
from .prompt_prefix import PromptPrefix, run_prefix

# Given how to compute a voice's prompt prefix, returns it (from the cache when it is there).
PrefixLookup = Callable[[Callable[[], PromptPrefix]], PromptPrefix]


class _RequestAlignmentAnalyzer(AlignmentStreamAnalyzer):
    """Upstream's analyzer reads attention through forward hooks it adds to the shared transformer
    (and never removes). Here the request feeds it the attentions of its own rows instead."""

    def _add_attention_spy(self, tfmr, buffer_idx, layer_idx, head_idx):
        pass

    def observe(self, attentions, row: int = 0, padding: int = 0, skipped_queries: int = 0) -> None:
        """`row` is the request's conditional row in the batch and `padding` its left padding: the
        columns before it are other requests' alignment, not this one's (and are masked to zero).
        `skipped_queries`: a prefill on a cached prompt prefix has no query rows for the prefix; the
        analyzer reads only the rows after the text, so zero rows stand in for them."""
        for buffer_idx, (layer_idx, head_idx) in enumerate(LLAMA_ALIGNED_HEADS):
            attention = attentions[layer_idx][row, head_idx, :, padding:].float().cpu()
            self.last_aligned_attns[buffer_idx] = F.pad(attention, (0, 0, skipped_queries, 0))


class SpeechDecoder:
    """What a T3Batch needs of a request: `rows` in the batch, a prefilled KV cache, and per step
    either, with the upstream sampler, `sample()` (from the logits of the last pass) and
    `next_embeds()` (input of the next pass), or, with the fast sampler, `sampler_row()` once (its
    row of the batch's sampling state) and `take()` with each token the batch drew for it.

    `generator` is seeded with the request's seed: the upstream sampler draws from it; the fast
    sampler keys its noise on that seed and on `piece` (the text piece this decoder speaks)."""

    rows: int
    wants_attentions = False

    def __init__(
        self,
        t3,
        params: SynthesisParams,
        generator: torch.Generator,
        prefix: PrefixLookup | None = None,
        upstream: bool = False,
        piece: int = 0,
    ):
        self.t3 = t3
        self.params = params
        self.generator = generator
        self.prefix = prefix  # None: the whole prompt is prefilled, as upstream does
        # The prefix its prefill started from (shared_prefix.py reads it once for every row it heads).
        self.prompt_prefix: PromptPrefix | None = None
        self.upstream = upstream  # upstream's forward arguments and sampler (SAMPLER=upstream)
        self.piece = piece
        self.step = 0  # tokens sampled
        self.last_token = t3.hp.start_speech_token
        self.tokens: deque[int] = deque()  # sampled, not yet taken by the request
        self.finished = False  # no more tokens will come
        self.cache = None  # the prefill's DynamicCache, until a batch takes it over
        self.length = 0  # positions this request has in the KV cache
        self.logits = torch.empty(0)  # (rows, vocab) from the last forward pass
        self.error: Exception | None = None

    def fail(self, error: Exception) -> None:
        self.error = error
        self.finished = True

    def _emit(self, token: int, last: bool) -> None:
        self.tokens.append(token)
        if last:
            self.finished = True

    def accept(self, logits: torch.Tensor, attentions, padding: int, first_row: int) -> None:
        self.logits = logits
        self.length += 1

    # ---- with the fast sampler (sampling.py) ----
    adjusts_logits = False  # whether adjust_logits() must see the CFG-combined logits before the filters

    def adjust_logits(self, scores: torch.Tensor) -> torch.Tensor:
        return scores

    def observe(self, attentions, first_row: int, padding: int) -> None:
        """The attentions of the batch's last pass (only for a decoder that `wants_attentions`)."""

    def sampler_row(self) -> sampling.RowState:
        p = self.params
        values = [0.0] * sampling.PARAMETER_COLUMNS
        values[sampling.TEMPERATURE] = p.temperature
        values[sampling.TOP_P] = p.top_p
        values[sampling.MIN_P] = p.min_p
        values[sampling.TOP_K] = p.top_k
        values[sampling.REPETITION_PENALTY] = p.repetition_penalty
        values[sampling.CFG_WEIGHT] = p.cfg_weight
        key = sampling.fold_seed(self.generator.initial_seed(), self.piece)
        vocab = self.logits.size(-1)
        return sampling.row_state(key, values, self.t3.hp.start_speech_token, vocab, self.logits.device)

    def take(self, token: int) -> None:
        """The token the batch drew for this request (-1: no candidate was left)."""
        step, self.step = self.step, self.step + 1
        if token < 0:
            self.finished = True
            return
        self.last_token = token
        stop = token == self.t3.hp.stop_speech_token and (step > 0 or not self.stop_only_after_first)
        self._emit(token, last=stop or self.step == self.params.max_new_tokens)

    stop_only_after_first = False  # turbo: upstream checks for the stop token from the second token on

    # What each decoder does per step (CfgDecoder, TurboDecoder):
    def prefill(self) -> None:
        """Run the request's prompt alone; leaves `cache`, `length` and `logits` set."""
        raise NotImplementedError

    def sample(self) -> None:
        """Sample one token from `logits` (or finish)."""
        raise NotImplementedError

    def next_embeds(self) -> torch.Tensor:
        """The input of the next forward pass for this request's rows: (rows, 1, dim)."""
        raise NotImplementedError


class CfgDecoder(SpeechDecoder):
    """Standard and multilingual T3: a conditional and an unconditional row, mixed by cfg_weight."""

    rows = 2

    def __init__(self, t3, backend, t3_cond, text_tokens, params, generator, multilingual: bool, **options):
        super().__init__(t3, params, generator, **options)
        self.backend = backend
        self.t3_cond = t3_cond
        self.text_tokens = text_tokens
        self.multilingual = multilingual
        self.wants_attentions = multilingual
        self.analyzer: _RequestAlignmentAnalyzer | None = None
        hp = t3.hp
        device = t3.device
        self.generated_ids = torch.tensor([[hp.start_speech_token]], dtype=torch.long, device=device)
        self.repetition_penalty = RepetitionPenaltyLogitsProcessor(penalty=float(params.repetition_penalty))
        self.min_p_warper = MinPLogitsWarper(min_p=params.min_p)
        self.top_p_warper = TopPLogitsWarper(top_p=params.top_p)
        self.next_token: torch.Tensor | None = None

    def prefill(self) -> None:
        t3, hp = self.t3, self.t3.hp
        text_tokens = torch.atleast_2d(self.text_tokens).to(dtype=torch.long, device=t3.device)
        initial_speech_tokens = hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
        embeds, len_cond = t3.prepare_input_embeds(
            t3_cond=self.t3_cond,
            text_tokens=text_tokens,
            speech_tokens=initial_speech_tokens,
            cfg_weight=self.params.cfg_weight,
        )
        if self.multilingual:
            self.analyzer = _RequestAlignmentAnalyzer(
                t3.tfmr,
                None,
                text_tokens_slice=(len_cond, len_cond + text_tokens.size(-1)),
                alignment_layer_idx=9,
                eos_idx=hp.stop_speech_token,
            )
        bos_embed = t3.speech_emb(self.generated_ids) + t3.speech_pos_emb.get_fixed_embedding(0)
        bos_embed = torch.cat([bos_embed, bos_embed])  # batch of 2: conditional and unconditional
        inputs = torch.cat([embeds, bos_embed], dim=1)
        self.length = inputs.size(1)
        if not self.upstream and self.analyzer is None:
            # Only upstream's exact path and the alignment analyzer need attentions; without them the
            # backbone runs its SDPA kernel.
            llama = self.backend.model
            if self.prefix is None:
                output = llama(inputs_embeds=inputs, use_cache=True)
            else:
                prefix = self.prompt_prefix = self.prefix(lambda: run_prefix(llama, embeds[:1, :len_cond]))
                output = llama(
                    inputs_embeds=inputs[:, prefix.length :], past_key_values=prefix.cache(rows=2), use_cache=True
                )
            self.cache = output.past_key_values
            self.logits = t3.speech_head(output.last_hidden_state[:, -1, :])
            return
        if self.prefix is None:
            output = self.backend(
                inputs_embeds=inputs,
                past_key_values=None,
                use_cache=True,
                output_attentions=True,
                output_hidden_states=True,
                return_dict=True,
            )
            self.cache = output.past_key_values
            self.logits = output.logits[:, -1, :]
            skipped = 0
        else:
            # Both rows share the conditioning (only the unconditional row's text is zeroed).
            llama = self.backend.model
            prefix = self.prompt_prefix = self.prefix(lambda: run_prefix(llama, embeds[:1, :len_cond]))
            output = llama(
                inputs_embeds=inputs[:, prefix.length :],
                past_key_values=prefix.cache(rows=2),
                use_cache=True,
                output_attentions=True,
                output_hidden_states=True,
                return_dict=True,
            )
            self.cache = output.past_key_values
            self.logits = t3.speech_head(output.hidden_states[-1][:, -1:])[:, -1, :]
            skipped = prefix.length
        if self.analyzer is not None:
            self.analyzer.observe(output.attentions, skipped_queries=skipped)

    def sample(self) -> None:
        params = self.params
        logits_step = self.logits.float()
        cond, uncond = logits_step[0:1, :], logits_step[1:2, :]
        cfg = torch.as_tensor(params.cfg_weight, device=cond.device, dtype=cond.dtype)
        logits = cond + cfg * (cond - uncond)
        if self.analyzer is not None:
            last_token = self.generated_ids[0, -1].item() if len(self.generated_ids[0]) > 0 else None
            logits = self.analyzer.step(logits, next_token=last_token)
        # Token ids are int64; torch types every slice as a plain Tensor.
        ids_for_proc = cast(torch.LongTensor, self.generated_ids[:1, ...])
        logits = self.repetition_penalty(ids_for_proc, logits)
        if params.temperature != 1.0:
            logits = logits / params.temperature
        logits = self.min_p_warper(ids_for_proc, logits)
        logits = self.top_p_warper(ids_for_proc, logits)
        probs = torch.softmax(logits, dim=-1)
        next_token = torch.multinomial(probs, num_samples=1, generator=self.generator)
        self.generated_ids = torch.cat([self.generated_ids, next_token], dim=1)
        self.next_token = next_token
        self.step += 1
        token = int(next_token.item())
        self._emit(token, last=token == self.t3.hp.stop_speech_token or self.step == params.max_new_tokens)

    def next_embeds(self) -> torch.Tensor:
        t3 = self.t3
        embed = t3.speech_emb(self.next_token) + t3.speech_pos_emb.get_fixed_embedding(self.step)
        return torch.cat([embed, embed])

    def accept(self, logits, attentions, padding, first_row) -> None:
        super().accept(logits, attentions, padding, first_row)
        if self.analyzer is not None:
            self.analyzer.observe(attentions, row=first_row, padding=padding)

    @property
    def adjusts_logits(self) -> bool:  # type: ignore[override]
        return self.analyzer is not None

    def adjust_logits(self, scores: torch.Tensor) -> torch.Tensor:
        assert self.analyzer is not None
        return self.analyzer.step(scores, next_token=self.last_token)

    def observe(self, attentions, first_row: int, padding: int) -> None:
        if self.analyzer is not None:
            self.analyzer.observe(attentions, row=first_row, padding=padding)


class TurboDecoder(SpeechDecoder):
    """Turbo T3 (GPT-2 backbone, no CFG): one row."""

    rows = 1

    stop_only_after_first = True

    def __init__(self, t3, t3_cond, text_tokens, params, generator, **options):
        super().__init__(t3, params, generator, **options)
        self.t3_cond = t3_cond
        self.text_tokens = text_tokens
        processors = LogitsProcessorList()
        if params.temperature > 0 and params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k > 0:
            processors.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
        if params.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        self.processors = processors
        self.history = torch.zeros(1, 0, dtype=torch.long)  # set by prefill

    def prefill(self) -> None:
        t3 = self.t3
        start = t3.hp.start_speech_token * torch.ones_like(self.text_tokens[:, :1])
        embeds, len_cond = t3.prepare_input_embeds(
            t3_cond=self.t3_cond, text_tokens=self.text_tokens, speech_tokens=start, cfg_weight=0.0
        )
        if self.prefix is None:
            out = t3.tfmr(inputs_embeds=embeds, use_cache=True)
        else:
            prefix = self.prompt_prefix = self.prefix(lambda: run_prefix(t3.tfmr, embeds[:, :len_cond]))
            out = t3.tfmr(
                inputs_embeds=embeds[:, prefix.length :], past_key_values=prefix.cache(rows=1), use_cache=True
            )
        self.cache = out.past_key_values
        self.length = embeds.size(1)
        self.logits = t3.speech_head(out[0][:, -1:])[:, -1, :]
        self.history = start

    def sample(self) -> None:
        step = self.step
        processed = self.processors(cast(torch.LongTensor, self.history), cast(torch.FloatTensor, self.logits.float()))
        if step > 0 and torch.all(processed == -float("inf")):
            self.finished = True
            return
        probs = F.softmax(processed, dim=-1)
        next_token = torch.multinomial(probs, num_samples=1, generator=self.generator)
        self.history = next_token if step == 0 else torch.cat([self.history, next_token], dim=1)
        self.next_token = next_token
        self.step += 1
        token = int(next_token.item())
        # Upstream checks for the stop token only from the second token on.
        stop = step > 0 and token == self.t3.hp.stop_speech_token
        self._emit(token, last=stop or self.step == self.params.max_new_tokens)

    def next_embeds(self) -> torch.Tensor:
        return self.t3.speech_emb(self.next_token)
