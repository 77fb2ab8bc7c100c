"""Continuous batching of T3: every active request of a variant advances in one forward pass.

Design: a left-padded batch KV cache.
- A request is prefilled alone (its prompt, exactly as upstream), then joins the batch: its cache
  rows go into the batch cache's spare rows, right-aligned behind zero padding (when its prompt is
  the longest, the other rows' padding grows instead). Standard and multilingual requests bring two
  rows (the conditional and the unconditional row of classifier-free guidance), turbo requests one.
- Each step feeds one token per row with a 2D attention mask (zero over each row's padding) and
  explicit position ids (each row's own length): Llama applies rotary embeddings from them, GPT-2
  adds its learned position embeddings from them, and standard's speech position embedding is the
  request's own step. Masked positions get exactly zero attention weight, so a row in a batch
  differs from the same row alone only by the float rounding of differently shaped matmuls.
- A request leaves (finished, cancelled or failed): the last member's rows move into its place, and
  columns that have become padding in every row drop out of the cache's view.
- With no padding at all (a request alone, or rows of equal length) the pass is called exactly as
  upstream calls it (no mask, default positions), so a request alone is sample-identical to upstream.

Why not a paged cache: left padding needs nothing from the model but the mask and position ids that
every HF decoder accepts. The cache (kv_cache.py) reserves rows and columns, so a step writes its
column in place (not copying the cache, as DynamicCache's concatenation does), and a join or a leave
copies one request's rows, not the batch's.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Generator
from typing import Protocol

import torch

from . import attention, sampling, shared_prefix, tasks
from .decode import SpeechDecoder
from .kv_cache import SlotCache
from .sampling import SAMPLER_MODES, RowState


class DecodingBatch(Protocol):
    """What the scheduler and `speech_tokens` need of a variant's batch (T3Batch, or with CUDA_GRAPHS=on
    for turbo static_batch.StaticTurboBatch)."""

    members: list[SpeechDecoder]

    def __len__(self) -> int: ...
    def join(self, decoder: SpeechDecoder) -> None: ...
    def leave(self, decoder: SpeechDecoder) -> None: ...
    def step(self) -> list[SpeechDecoder]: ...
    def fresh(self) -> T3Batch: ...


class T3Batch:
    """The requests of one variant decoding together. `autocast` gives the context for T3 passes;
    `sampler` is "fast" (one batched sampling pass per step, sampling.py) or "upstream" (each request
    runs upstream's own sampler and forward arguments: sample-identical to upstream's generate())."""

    def __init__(
        self,
        t3,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        cache_dtype: torch.dtype | None = None,
        sampler: str = "fast",
    ):
        if sampler not in SAMPLER_MODES:
            raise ValueError(f"sampler must be one of {SAMPLER_MODES}, got {sampler!r}")
        self.t3 = t3
        self.autocast = autocast
        self.cache_dtype = cache_dtype  # what the KV cache holds (None: as the backbone computes it)
        self.sampler = sampler
        self.members: list[SpeechDecoder] = []
        self.padding: list[int] = []  # left padding columns of each member
        self.cache: SlotCache | None = None
        self.length = 0  # columns in the cache
        # The fast sampler's batch-wide tensors, in member order (None while the batch is empty):
        self.rows: RowState | None = None  # per request: seed key, step, parameters, token history
        self.logits: torch.Tensor | None = None  # (cache rows, vocab) of the last pass, to sample from
        self._row_padding: torch.Tensor | None = None  # (cache rows,) left padding, rebuilt on a join or leave
        # Which rows share a prompt prefix (shared_prefix.py), rebuilt on a join or leave; None: none do.
        self._prefix_plan: shared_prefix.SharedPrefixPlan | None = None
        self._prefix_plan_stale = True

    def __len__(self) -> int:
        return len(self.members)

    def fresh(self) -> T3Batch:
        """An empty batch like this one (a request decoding alone, outside the scheduler)."""
        return T3Batch(self.t3, self.autocast, self.cache_dtype, self.sampler)

    @property
    def fast(self) -> bool:
        return self.sampler == "fast"

    # ---- membership -----------------------------------------------------------------------
    def join(self, decoder: SpeechDecoder) -> None:
        cache, decoder.cache = decoder.cache, None
        assert cache is not None  # prefilled
        if self.members and decoder.rows != self.members[0].rows:
            raise ValueError("every member of a batch has the same number of rows")
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        grow = max(0, decoder.length - self.length)
        if self.cache is None:
            self.cache = SlotCache(layers, self.cache_dtype)
        else:
            self.cache.append_rows(layers)  # right-aligned; a longer prompt extends every row's padding
        self.padding = [p + grow for p in self.padding] + [self.length + grow - decoder.length]
        self.members.append(decoder)
        self.length += grow
        self._row_padding, self._prefix_plan_stale = None, True
        if self.fast:
            row = decoder.sampler_row()
            self.rows = row if self.rows is None else self.rows.append(row)
            self.logits = decoder.logits if self.logits is None else torch.cat([self.logits, decoder.logits])

    def leave(self, decoder: SpeechDecoder) -> None:
        if decoder in self.members:
            self._keep([m for m in self.members if m is not decoder])

    def _keep(self, keep: list[SpeechDecoder]) -> list[int] | None:
        """Members not in `keep` leave: the last member's rows move into each one's place, so only
        one request's rows are copied per leave, and padding every row has in common is dropped.
        Returns the new order as old member indices (None when nobody left)."""
        leaving = [index for index, member in enumerate(self.members) if not any(member is k for k in keep)]
        if not leaving:
            return None
        self._row_padding, self._prefix_plan_stale = None, True
        if len(leaving) == len(self.members):
            self.members, self.padding, self.cache, self.length = [], [], None, 0
            self.rows = self.logits = None
            return []
        assert self.cache is not None  # there are members
        order = list(range(len(self.members)))
        for index in reversed(leaving):  # from the back, so every later index has already left
            rows, last = self.members[index].rows, len(self.members) - 1
            if index != last:
                self.cache.move_rows(last * rows, index * rows, rows)
                self.members[index], self.padding[index] = self.members[last], self.padding[last]
                order[index] = order[last]
            self.members.pop()
            self.padding.pop()
            order.pop()
            self.cache.drop_rows(rows)
        trim = min(self.padding)
        if trim:
            self.cache.trim_left(trim)
            self.padding = [p - trim for p in self.padding]
            self.length -= trim
        if self.fast:
            assert self.rows is not None and self.logits is not None
            device = self.logits.device
            rows = self.members[0].rows
            self.rows = self.rows.select(torch.tensor(order, device=device))
            self.logits = self.logits.index_select(
                0, torch.tensor([o * rows + r for o in order for r in range(rows)], device=device)
            )
        return order

    # ---- one step ---------------------------------------------------------------------------
    def step(self) -> list[SpeechDecoder]:
        """Sample one token for every member from its last logits, then one forward pass for those
        that go on. Returns the members that got a token or finished."""
        return self._step_fast() if self.fast else self._step_upstream()

    def _step_upstream(self) -> list[SpeechDecoder]:
        served = list(self.members)
        for member in served:
            try:
                member.sample()
            except Exception as exc:  # this request fails alone
                member.fail(exc)
        self._keep([m for m in self.members if not m.finished])
        if self.members:
            try:
                self._forward_upstream()
            except Exception as exc:  # the shared pass failed: every request in it fails
                for member in self.members:
                    member.fail(exc)
                self._keep([])
        return served

    def _step_fast(self) -> list[SpeechDecoder]:
        served = list(self.members)
        if not served:
            return served
        try:
            tokens = self._sample()
            values = tokens.tolist()  # the tick's one read from the device: every request's new token
        except Exception as exc:  # the batched draw failed: every request in it fails
            for member in served:
                member.fail(exc)
            self._keep([])
            return served
        for member, token in zip(served, values, strict=True):
            member.take(token)
        order = self._keep([m for m in self.members if not m.finished])
        if self.members:
            if order is not None:
                tokens = tokens.index_select(0, torch.tensor(order, device=tokens.device))
            try:
                self._forward_fast(tokens)
            except Exception as exc:  # the shared pass failed: every request in it fails
                for member in self.members:
                    member.fail(exc)
                self._keep([])
        return served

    def _sample(self) -> torch.Tensor:
        """Every member's next token in one batched pass; records it in the rows' history."""
        assert self.rows is not None and self.logits is not None
        rows = self.rows
        if self.members[0].rows == 2:
            hooked = [(i, m) for i, m in enumerate(self.members) if m.adjusts_logits]
            tokens = sampling.sample_cfg(self.logits, rows, functools.partial(_adjust, hooked) if hooked else None)
        else:
            tokens = sampling.sample_turbo(self.logits, rows)
        sampling.record(rows, tokens, forget_start=self.members[0].rows == 1)
        return tokens

    def _position_kwargs(self, device: torch.device) -> dict:
        """Attention mask and position ids for rows with left padding, as tensors (no per-row work);
        none at all without padding, so that a lone request is called exactly as upstream calls it."""
        if not any(self.padding):
            return {}
        if self._row_padding is None:
            per_row = [pad for member, pad in zip(self.members, self.padding, strict=True) for _ in range(member.rows)]
            self._row_padding = torch.tensor(per_row, dtype=torch.long, device=device)
        columns = torch.arange(self.length + 1, device=device)
        return {
            "attention_mask": (columns[None, :] >= self._row_padding[:, None]).long(),
            "position_ids": (self.length - self._row_padding)[:, None],
            "cache_position": columns[-1:],
        }

    def _shared_prefix_plan(self, device: torch.device) -> shared_prefix.SharedPrefixPlan | None:
        """Where the backbone attends in float32 on a CPU (attention.py), which rows share a prompt
        prefix, so that a step reads it once; None elsewhere, or when too few share one long enough
        (shared_prefix.MIN_SHARED_REQUESTS, MIN_SHARED_POSITIONS)."""
        if self._prefix_plan_stale:
            self._prefix_plan_stale = False
            self._prefix_plan = None
            if getattr(self.t3.tfmr.config, "_attn_implementation", None) == attention.IMPLEMENTATION:
                self._prefix_plan = shared_prefix.SharedPrefixPlan.build(
                    [m.prompt_prefix for m in self.members], self.padding, self.members[0].rows, device
                )
        return self._prefix_plan

    def _forward_fast(self, tokens: torch.Tensor) -> None:
        assert self.rows is not None
        t3 = self.t3
        embeds = t3.speech_emb(tokens)
        rows_per_member = self.members[0].rows
        if rows_per_member == 2:  # CFG: the speech position embedding of each request's own step, both rows
            embeds = (embeds + t3.speech_pos_emb.emb(self.rows.steps)).repeat_interleave(2, dim=0)
        embeds = embeds[:, None]  # (rows, 1, dim)
        observers = [(i, m) for i, m in enumerate(self.members) if m.wants_attentions]
        kwargs = self._position_kwargs(embeds.device)
        plan = self._shared_prefix_plan(embeds.device)
        if plan is not None:
            plan.begin_step(self.length + 1)
        with self.autocast(), shared_prefix.planned(plan):
            out = t3.tfmr(
                inputs_embeds=embeds,
                past_key_values=self.cache,
                use_cache=True,
                output_attentions=bool(observers),
                **kwargs,
            )
            self.logits = t3.speech_head(out[0][:, -1, :])
        self.cache = out.past_key_values
        self.length += 1
        for index, member in observers:
            member.observe(out.attentions, index * rows_per_member, self.padding[index])

    def _forward_upstream(self) -> None:
        embeds = torch.cat([m.next_embeds() for m in self.members])  # (rows, 1, dim)
        wants_attentions = any(m.wants_attentions for m in self.members)
        kwargs = self._position_kwargs(embeds.device)
        with self.autocast():
            if self.t3.hp.llama_config_name and not getattr(self.t3, "is_gpt", False):
                # As upstream's HF backend calls Llama for CFG decoding; logits from the last hidden state.
                out = self.t3.tfmr(
                    inputs_embeds=embeds,
                    past_key_values=self.cache,
                    use_cache=True,
                    output_attentions=True,
                    output_hidden_states=True,
                    return_dict=True,
                    **kwargs,
                )
                logits = self.t3.speech_head(out.hidden_states[-1])[:, -1, :]
            else:
                out = self.t3.tfmr(inputs_embeds=embeds, past_key_values=self.cache, use_cache=True, **kwargs)
                logits = self.t3.speech_head(out[0])[:, -1, :]
        self.cache = out.past_key_values
        self.length += 1
        row = 0
        for member, pad in zip(self.members, self.padding, strict=True):
            attentions = out.attentions if wants_attentions and member.wants_attentions else None
            member.accept(logits[row : row + member.rows], attentions, pad, row)
            row += member.rows


def _adjust(hooked: list[tuple[int, SpeechDecoder]], scores: torch.Tensor) -> torch.Tensor:
    """Multilingual's alignment analysis, on its requests' rows of the CFG-combined logits."""
    for index, member in hooked:
        scores[index : index + 1] = member.adjust_logits(scores[index : index + 1])
    return scores


def speech_tokens(decoder: SpeechDecoder, shared: DecodingBatch, autocast) -> Generator[int, None, None]:
    """Prefill `decoder` and yield its tokens as they are sampled: in a scheduler task, from the
    variant's shared batch (the scheduler steps it); otherwise from a batch of its own, stepped here."""
    with autocast():
        decoder.prefill()
    task = tasks.current()
    batch = shared if task is not None else shared.fresh()
    batch.join(decoder)
    try:
        while True:
            while decoder.tokens:
                yield decoder.tokens.popleft()
            if decoder.error is not None:
                raise decoder.error
            if decoder.finished:
                return
            if task is None:
                batch.step()
            else:
                tasks.wait_until(lambda: bool(decoder.tokens) or decoder.finished)
    finally:
        batch.leave(decoder)
