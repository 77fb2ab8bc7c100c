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
from collections.abc import Callable, Generator

import torch

from . import tasks
from .decode import SpeechDecoder
from .kv_cache import SlotCache


class T3Batch:
    """The requests of one variant decoding together. `autocast` gives the context for T3 passes."""

    def __init__(
        self,
        t3,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        cache_dtype: torch.dtype | None = None,
    ):
        self.t3 = t3
        self.autocast = autocast
        self.cache_dtype = cache_dtype  # what the KV cache holds (None: as the backbone computes it)
        self.members: list[SpeechDecoder] = []
        self.padding: list[int] = []  # left padding columns of each member
        self.cache: SlotCache | None = None
        self.length = 0  # columns in the cache

    def __len__(self) -> int:
        return len(self.members)

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

    def leave(self, decoder: SpeechDecoder) -> None:
        if decoder in self.members:
            self._keep([m for m in self.members if m is not decoder])

    def _keep(self, keep: list[SpeechDecoder]) -> None:
        """Members not in `keep` leave: the last member's rows move into each one's place, so only
        one request's rows are copied per leave, and padding every row has in common is dropped."""
        leaving = [index for index, member in enumerate(self.members) if not any(member is k for k in keep)]
        if not leaving:
            return
        if len(leaving) == len(self.members):
            self.members, self.padding, self.cache, self.length = [], [], None, 0
            return
        assert self.cache is not None  # there are members
        for index in reversed(leaving):  # from the back, so every later index has already left
            rows, last = self.members[index].rows, len(self.members) - 1
            if index != last:
                self.cache.move_rows(last * rows, index * rows, rows)
                self.members[index], self.padding[index] = self.members[last], self.padding[last]
            self.members.pop()
            self.padding.pop()
            self.cache.drop_rows(rows)
        trim = min(self.padding)
        if trim:
            self.cache.trim_left(trim)
            self.padding = [p - trim for p in self.padding]
            self.length -= trim

    # ---- one step ---------------------------------------------------------------------------
    def step(self) -> list[SpeechDecoder]:
        """Sample one token for every member from its last logits, then one forward pass for those
        that go on. Returns the members that got a token or finished."""
        served = list(self.members)
        for member in served:
            try:
                member.sample()
            except Exception as exc:  # this request fails alone
                member.fail(exc)
        self._keep([m for m in self.members if not m.finished])
        if self.members:
            try:
                self._forward()
            except Exception as exc:  # the shared pass failed: every request in it fails
                for member in self.members:
                    member.fail(exc)
                self._keep([])
        return served

    def _forward(self) -> None:
        embeds = torch.cat([m.next_embeds() for m in self.members])  # (rows, 1, dim)
        rows = embeds.size(0)
        wants_attentions = any(m.wants_attentions for m in self.members)
        kwargs = {}
        if any(self.padding):
            device = embeds.device
            mask = torch.ones(rows, self.length + 1, dtype=torch.long, device=device)
            positions = torch.empty(rows, 1, dtype=torch.long, device=device)
            row = 0
            for member, pad in zip(self.members, self.padding, strict=True):
                mask[row : row + member.rows, :pad] = 0
                positions[row : row + member.rows] = self.length - pad
                row += member.rows
            kwargs = {
                "attention_mask": mask,
                "position_ids": positions,
                "cache_position": torch.tensor([self.length], device=device),
            }
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


def speech_tokens(decoder: SpeechDecoder, shared: T3Batch, autocast) -> Generator[int, None, None]:
    """Prefill `decoder` and yield its tokens as they are sampled: in a scheduler task, from the
    variant's shared batch (the scheduler steps it); otherwise from a batch of its own, stepped here."""
    with autocast():
        decoder.prefill()
    task = tasks.current()
    batch = shared if task is not None else T3Batch(shared.t3, shared.autocast, shared.cache_dtype)
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
