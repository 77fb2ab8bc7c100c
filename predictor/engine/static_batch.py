"""Turbo's T3 decode step over fixed buffers, captured as one CUDA graph per batch-size bucket
(`CUDA_GRAPHS=on`; off by default until a GPU run has checked it against the eager path).

Why: even with the fast sampler a turbo tick is some 1,400 aten ops, each a kernel launch of 5-10 us
of host time on a GPU, against about 1 ms of GPU work at 64 rows. A CUDA graph replays the whole
step (embedding, 24 GPT-2 blocks, speech head, the batched sampler and its bookkeeping) with one
launch; the tick then reads the new tokens once and does Python bookkeeping.

What makes the step capturable is that no shape or Python-side value changes between steps:
- each request owns a slot: a row of a KV buffer (layers, slots, heads, positions, head dim)
  reserved for the longest request (prompt + MAX_NEW_TOKENS), its cache left-aligned in the row;
- the new key and value are scattered into each row at that row's own length (a device tensor),
  and attention runs over all positions with a mask up to the row's length: no padding to track;
- the batch runs at the smallest bucket (1, 2, 4, ..., capacity) that holds its members; slots past
  the members compute rows nobody reads. A leaving request's slot is refilled by the last member's;
- the sampler's state lives in slot-indexed buffers (sampling.RowState views).

The GPT-2 block is written out here over the model's own modules (layer norms, c_attn, c_proj, MLP),
because transformers' forward decides things in Python from tensor values (masks, cache lengths).
On a CPU the same code runs uncaptured: the tests compare its tokens with the eager batch's there.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import sampling
from .batching import T3Batch
from .decode import SpeechDecoder

logger = logging.getLogger(__name__)

BUCKET_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
POSITION_ROUNDING = 128


def buckets(capacity: int) -> tuple[int, ...]:
    """The batch sizes graphs are captured for: powers of two up to the capacity, and the capacity."""
    sizes = tuple(size for size in BUCKET_SIZES if size < capacity)
    return (*sizes, capacity)


class StaticTurboBatch:
    """The turbo requests decoding together, in slots of fixed buffers (interface of batching.T3Batch:
    join, leave, step, members, len)."""

    def __init__(
        self,
        t3,
        autocast: Callable[[], contextlib.AbstractContextManager],
        dtype: torch.dtype,
        capacity: int,
        max_new_tokens: int,
        max_prompt: int,
        capture: bool,
    ):
        config = t3.tfmr.config
        if config.scale_attn_by_inverse_layer_idx or not config.scale_attn_weights:
            raise ValueError("the static turbo step assumes GPT-2 attention scaled by 1/sqrt(head dim) only")
        self.t3 = t3
        self.autocast = autocast
        self.capacity = capacity
        self.capture = capture
        self.sampler = "fast"
        self.members: list[SpeechDecoder] = []
        self.buckets = buckets(capacity)
        layers, heads = config.n_layer, config.n_head
        self.heads, self.head_dim, self.width = heads, config.n_embd // heads, config.n_embd
        wanted = max_prompt + max_new_tokens
        self.positions = min(config.n_positions, -(-wanted // POSITION_ROUNDING) * POSITION_ROUNDING)
        device = t3.speech_head.weight.device
        shape = (layers, capacity, heads, self.positions, self.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = torch.zeros(capacity, dtype=torch.long, device=device)  # cached positions per slot
        self.tokens = torch.zeros(capacity, dtype=torch.long, device=device)  # each slot's next input
        self.drawn = torch.zeros(capacity, dtype=torch.long, device=device)  # each slot's last draw (-1: none left)
        self.columns = torch.arange(self.positions, device=device)
        vocab = t3.speech_head.out_features
        self.rows = sampling.RowState(
            keys=torch.zeros(capacity, dtype=torch.int64, device=device),
            steps=torch.zeros(capacity, dtype=torch.int64, device=device),
            params=torch.ones(capacity, sampling.PARAMETER_COLUMNS, dtype=torch.float32, device=device),
            seen=torch.zeros(capacity, vocab, dtype=torch.bool, device=device),
        )
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        if capture:
            self._capture()

    def __len__(self) -> int:
        return len(self.members)

    @property
    def cache(self) -> torch.Tensor | None:
        """The KV buffers while anyone is decoding (T3Batch's attribute of the same name)."""
        return self.keys if self.members else None

    @property
    def memory_bytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()

    def fresh(self) -> T3Batch:
        """A request decoding alone, outside the scheduler, runs the eager batch."""
        return T3Batch(self.t3, self.autocast, None, "fast")

    def _slot_rows(self, slot: int) -> sampling.RowState:
        return sampling.RowState(*(field[slot : slot + 1] for field in self.rows._fields()))

    # ---- membership -----------------------------------------------------------------------
    def join(self, decoder: SpeechDecoder) -> None:
        cache, decoder.cache = decoder.cache, None
        assert cache is not None  # prefilled
        if len(self.members) == self.capacity:
            decoder.fail(RuntimeError(f"the static T3 batch is full ({self.capacity} requests)"))
            return
        needed = decoder.length + decoder.params.max_new_tokens
        if needed > self.positions:
            decoder.fail(
                ValueError(
                    f"the prompt and token cap need {needed} positions; the static T3 batch has {self.positions}"
                )
            )
            return
        slot = len(self.members)
        for layer, cached in enumerate(cache.layers):
            self.keys[layer, slot, :, : decoder.length] = cached.keys[0]
            self.values[layer, slot, :, : decoder.length] = cached.values[0]
        self.lengths[slot] = decoder.length
        row = decoder.sampler_row()
        for mine, theirs in zip(self._slot_rows(slot)._fields(), row._fields(), strict=True):
            mine.copy_(theirs)
        # The first token comes from the prefill's logits, drawn here as the eager batch's first step draws it.
        rows = self._slot_rows(slot)
        first = sampling.sample_turbo(decoder.logits, rows)
        sampling.record(rows, first, forget_start=True)
        self.tokens[slot] = first.clamp(min=0)[0]
        self.members.append(decoder)
        decoder.take(int(first.item()))  # a join's read, not a tick's
        if decoder.finished:
            self._release([decoder])

    def leave(self, decoder: SpeechDecoder) -> None:
        if decoder in self.members:
            self._release([decoder])

    def _release(self, leaving: list[SpeechDecoder]) -> None:
        """Each leaving slot takes the last member's slot: its KV row, length, next input and sampler row."""
        for decoder in leaving:
            index, last = self.members.index(decoder), len(self.members) - 1
            if index != last:
                for buffer in (self.keys, self.values):
                    buffer[:, index] = buffer[:, last]
                for field in (self.lengths, self.tokens, *self.rows._fields()):
                    field[index] = field[last]
                self.members[index] = self.members[last]
            self.members.pop()
            self.lengths[last] = 0  # a free slot attends to one position, so it never overruns its row

    # ---- one step ---------------------------------------------------------------------------
    def step(self) -> list[SpeechDecoder]:
        """One forward pass and draw for every member (one graph replay on CUDA), then one read."""
        served = list(self.members)
        if not served:
            return served
        size = next(size for size in self.buckets if size >= len(served))
        try:
            if size in self.graphs:
                self.graphs[size].replay()
            else:
                self._forward_and_draw(size)
            drawn = self.drawn[: len(served)].tolist()  # the tick's one read from the device
        except Exception as exc:  # the shared pass failed: every request in it fails
            for member in served:
                member.fail(exc)
            self._release(served)
            return served
        for member, token in zip(served, drawn, strict=True):
            member.take(token)
        self._release([m for m in served if m.finished])
        return served

    def _forward_and_draw(self, size: int) -> None:
        """Every op on fixed shapes and buffers (capturable): the first `size` slots decode one token."""
        t3, tfmr = self.t3, self.t3.tfmr
        positions = self.lengths[:size]
        with self.autocast():
            hidden = (t3.speech_emb(self.tokens[:size]) + tfmr.wpe(positions))[:, None]
            mask = (self.columns[None, :] <= positions[:, None])[:, None, None, :]
            at = positions.view(size, 1, 1, 1).expand(size, self.heads, 1, self.head_dim)
            for layer, block in enumerate(tfmr.h):
                hidden = hidden + self._attend(block, block.ln_1(hidden), layer, size, at, mask)
                hidden = hidden + block.mlp(block.ln_2(hidden))
            logits = t3.speech_head(tfmr.ln_f(hidden)[:, 0])
        rows = sampling.RowState(*(field[:size] for field in self.rows._fields()))
        drawn = sampling.sample_turbo(logits, rows)
        sampling.record(rows, drawn, forget_start=True)
        self.drawn[:size].copy_(drawn)
        self.tokens[:size].copy_(drawn.clamp(min=0))
        self.lengths[:size].add_(1).clamp_(max=self.positions - 1)

    def _attend(self, block, hidden, layer: int, size: int, at: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        query, key, value = block.attn.c_attn(hidden).split(self.width, dim=2)
        query, key, value = (t.view(size, 1, self.heads, self.head_dim).transpose(1, 2) for t in (query, key, value))
        keys, values = self.keys[layer, :size], self.values[layer, :size]
        keys.scatter_(2, at, key.to(keys.dtype))
        values.scatter_(2, at, value.to(values.dtype))
        out = F.scaled_dot_product_attention(query, keys.to(query.dtype), values.to(query.dtype), attn_mask=mask)
        return block.attn.c_proj(out.transpose(1, 2).reshape(size, 1, self.width))

    # ---- CUDA graphs --------------------------------------------------------------------------
    def _capture(self) -> None:
        """One graph per bucket, sharing one memory pool; the warm-up runs on a side stream, as
        torch requires, and every buffer is reset after."""
        pool = None
        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for size in self.buckets:
                    for _ in range(2):
                        self._forward_and_draw(size)
            torch.cuda.current_stream().wait_stream(side)
            for size in reversed(self.buckets):  # the largest first, so smaller ones reuse its pool
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self._forward_and_draw(size)
                pool = graph.pool()
                self.graphs[size] = graph
            torch.cuda.synchronize()
        for field in (self.lengths, self.tokens, self.drawn, self.rows.steps, self.rows.keys):
            field.zero_()
        self.rows.seen.zero_()
        logger.info(
            "turbo T3 step captured as CUDA graphs for batch sizes %s (%d positions, %.1f GB of KV buffers)",
            ", ".join(map(str, self.buckets)),
            self.positions,
            self.memory_bytes / 1e9,
        )
