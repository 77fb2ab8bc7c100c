"""Speech-token generation, one token at a time, without touching shared model state.

These loops follow upstream's T3.inference (standard and multilingual, with classifier-free
guidance) and T3.inference_turbo step for step, so that with the same seed they sample the same
tokens. What differs: tokens are yielded as they are sampled (for streaming), the KV cache and
alignment analysis belong to the request, sampling draws from the request's own generator, the
model lock is held per forward pass (so requests may interleave, from any thread), and the token
cap is the request's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
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

from .params import SynthesisParams


class _RequestAlignmentAnalyzer(AlignmentStreamAnalyzer):
    """Upstream's analyzer reads attention through forward hooks it adds to the shared transformer
    (and never removes). Here the request feeds it the attentions of its own forward pass instead."""

    def _add_attention_spy(self, tfmr, buffer_idx, layer_idx, head_idx):
        pass

    def observe(self, attentions) -> None:
        for buffer_idx, (layer_idx, head_idx) in enumerate(LLAMA_ALIGNED_HEADS):
            self.last_aligned_attns[buffer_idx] = attentions[layer_idx].cpu()[0, head_idx]


def cfg_speech_tokens(
    t3,
    backend,
    t3_cond,
    text_tokens: torch.Tensor,
    params: SynthesisParams,
    generator: torch.Generator,
    lock: threading.Lock,
    multilingual: bool,
) -> Iterator[int]:
    """Yield speech token ids (the stop token last, if sampled) for standard and multilingual T3."""
    hp = t3.hp
    device = t3.device
    with lock, torch.inference_mode():
        text_tokens = torch.atleast_2d(text_tokens).to(dtype=torch.long, device=device)
        initial_speech_tokens = hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
        embeds, len_cond = t3.prepare_input_embeds(
            t3_cond=t3_cond,
            text_tokens=text_tokens,
            speech_tokens=initial_speech_tokens,
            cfg_weight=params.cfg_weight,
        )
        analyzer = None
        if multilingual:
            analyzer = _RequestAlignmentAnalyzer(
                t3.tfmr,
                None,
                text_tokens_slice=(len_cond, len_cond + text_tokens.size(-1)),
                alignment_layer_idx=9,
                eos_idx=hp.stop_speech_token,
            )
        bos_token = torch.tensor([[hp.start_speech_token]], dtype=torch.long, device=device)
        bos_embed = t3.speech_emb(bos_token) + t3.speech_pos_emb.get_fixed_embedding(0)
        bos_embed = torch.cat([bos_embed, bos_embed])  # batch of 2: conditional and unconditional
        output = backend(
            inputs_embeds=torch.cat([embeds, bos_embed], dim=1),
            past_key_values=None,
            use_cache=True,
            output_attentions=True,
            output_hidden_states=True,
            return_dict=True,
        )
        past = output.past_key_values
        if analyzer is not None:
            analyzer.observe(output.attentions)
    generated_ids = bos_token.clone()
    repetition_penalty = RepetitionPenaltyLogitsProcessor(penalty=float(params.repetition_penalty))
    min_p_warper = MinPLogitsWarper(min_p=params.min_p)
    top_p_warper = TopPLogitsWarper(top_p=params.top_p)

    for step in range(params.max_new_tokens):
        with torch.inference_mode():
            logits_step = output.logits[:, -1, :]
            cond, uncond = logits_step[0:1, :], logits_step[1:2, :]
            cfg = torch.as_tensor(params.cfg_weight, device=cond.device, dtype=cond.dtype)
            logits = cond + cfg * (cond - uncond)
            if analyzer is not None:
                last_token = generated_ids[0, -1].item() if len(generated_ids[0]) > 0 else None
                logits = analyzer.step(logits, next_token=last_token)
            # Token ids are int64; torch types every slice as a plain Tensor.
            ids_for_proc = cast(torch.LongTensor, generated_ids[:1, ...])
            logits = repetition_penalty(ids_for_proc, logits)
            if params.temperature != 1.0:
                logits = logits / params.temperature
            logits = min_p_warper(ids_for_proc, logits)
            logits = top_p_warper(ids_for_proc, logits)
            probs = torch.softmax(logits, dim=-1)
            next_token = torch.multinomial(probs, num_samples=1, generator=generator)
            generated_ids = torch.cat([generated_ids, next_token], dim=1)
        token = int(next_token.item())
        yield token
        if token == hp.stop_speech_token:
            return
        with lock, torch.inference_mode():
            next_embed = t3.speech_emb(next_token) + t3.speech_pos_emb.get_fixed_embedding(step + 1)
            output = backend(
                inputs_embeds=torch.cat([next_embed, next_embed]),
                past_key_values=past,
                output_attentions=True,
                output_hidden_states=True,
                return_dict=True,
            )
            past = output.past_key_values
            if analyzer is not None:
                analyzer.observe(output.attentions)


def turbo_speech_tokens(
    t3,
    t3_cond,
    text_tokens: torch.Tensor,
    params: SynthesisParams,
    generator: torch.Generator,
    lock: threading.Lock,
) -> Iterator[int]:
    """Yield speech token ids for turbo T3 (GPT-2 backbone, no CFG); stops after the stop token."""
    hp = t3.hp
    processors = LogitsProcessorList()
    if params.temperature > 0 and params.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k > 0:
        processors.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        processors.append(TopPLogitsWarper(params.top_p))
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))

    with lock, torch.inference_mode():
        start = hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
        embeds, _ = t3.prepare_input_embeds(
            t3_cond=t3_cond, text_tokens=text_tokens, speech_tokens=start, cfg_weight=0.0
        )
        out = t3.tfmr(inputs_embeds=embeds, use_cache=True)
        past = out.past_key_values
        logits = t3.speech_head(out[0][:, -1:])[:, -1, :]
    history = start
    for step in range(params.max_new_tokens):
        with torch.inference_mode():
            processed = processors(history, logits)
            if step > 0 and torch.all(processed == -float("inf")):
                return
            probs = F.softmax(processed, dim=-1)
            next_token = torch.multinomial(probs, num_samples=1, generator=generator)
            history = next_token if step == 0 else torch.cat([history, next_token], dim=1)
        token = int(next_token.item())
        yield token
        # Upstream checks for the stop token only from the second token on.
        if step > 0 and token == hp.stop_speech_token:
            return
        if step + 1 == params.max_new_tokens:
            return
        with lock, torch.inference_mode():
            out = t3.tfmr(inputs_embeds=t3.speech_emb(next_token), past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = t3.speech_head(out[0])[:, -1, :]
