"""The fast sampler: one pass of tensor ops samples the next token of every request in a T3 batch.

Why: the upstream sampler (decode.py, `SAMPLER=upstream`) runs transformers' logits processors and
`torch.multinomial` once per request, then reads the token back with `.item()`. On a GPU each of those
ops is a kernel launch and each read drains the device's queue, so a tick's host cost grew with the
batch. Here every step is one batched op with per-row parameters, and the only read from the device is
the batch's new tokens, once per tick (batching.py).

Randomness without global state: each row's draw is a Gumbel-max over counter-based noise, a hash of
(the request's seed, its step, the token id). A request therefore samples the same tokens whatever
else is in the batch and wherever its rows sit, and no generator object is advanced or synchronised.
argmax(logits + Gumbel noise) draws from softmax(logits), the distribution the upstream sampler draws
from with `torch.multinomial` (tests/unit/test_sampling.py checks it with a chi-square test), but not
the same sample for a given seed: upstream's sample-for-sample equality is `SAMPLER=upstream`'s.

The filters reproduce transformers' processors (same formulas, same order as upstream per variant):
- CFG variants (T3.inference): CFG combine, repetition penalty, temperature, min_p, top_p;
- turbo (T3.inference_turbo): temperature, top_k, top_p, repetition penalty.
A processor that upstream skips for a value (turbo's top_p = 1, top_k = 0, penalty 1) is the identity
here for that value, up to tokens whose probability already underflows to zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

SAMPLER_MODES = ("fast", "upstream")

_MASK32 = 0xFFFFFFFF
# Odd multipliers below 2**31, so that a 32-bit value times one fits in int64 without overflow.
_MIX_A = 0x7FEB352D
_MIX_B = 0x046CA68B
_TOKEN_STRIDE = 0x61C88647  # spreads neighbouring token ids before mixing
_STEP_STRIDE = 0x2545F491

# Columns of the per-row parameter tensor.
TEMPERATURE, TOP_P, MIN_P, TOP_K, REPETITION_PENALTY, CFG_WEIGHT = range(6)
PARAMETER_COLUMNS = 6


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply rounds) on int64 tensors holding values in [0, 2**32):
    the shifts are logical because the values are never negative."""
    x = x ^ (x >> 16)
    x = (x * _MIX_A) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _MIX_B) & _MASK32
    return x ^ (x >> 16)


def fold_seed(seed: int, stream: int = 0) -> int:
    """A request's seed (any int) and a stream number (its text piece) as one 32-bit key."""
    key = torch.tensor([(seed ^ (seed >> 32)) & _MASK32, stream & _MASK32], dtype=torch.int64)
    mixed = _mix32(_mix32(key[0:1]) ^ _mix32(key[1:2] + 1))
    return int(mixed.item())


def counter_uniform(keys: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """(rows, vocab) float32 noise in (0, 1), a pure function of (key, step, token id) per element."""
    row = _mix32((keys + steps * _STEP_STRIDE) & _MASK32)
    token = (torch.arange(vocab, device=keys.device, dtype=torch.int64) * _TOKEN_STRIDE) & _MASK32
    bits = _mix32(_mix32(row[:, None] ^ token[None, :]))
    # 23 bits: (k + 0.5) / 2**23 stays below 1 in float32 (with 24, the largest rounds up to 1.0, whose
    # Gumbel noise is infinite and would win even over a filtered token).
    return ((bits >> 9).to(torch.float32) + 0.5) * (1.0 / (1 << 23))


def gumbel_argmax(logits: torch.Tensor, keys: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One draw per row from softmax(logits): argmax of logits plus Gumbel noise."""
    uniform = counter_uniform(keys, steps, logits.size(-1))
    return torch.argmax(logits - torch.log(-torch.log(uniform)), dim=-1)


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor, with the history as a (rows, vocab) mask."""
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def min_p_filter(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """MinPLogitsWarper: drop tokens less likely than min_p times the likeliest (never the likeliest)."""
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), -float("inf"))


def top_p_filter(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """TopPLogitsWarper: drop the least likely tokens whose cumulative probability is <= 1 - top_p."""
    ascending, order = torch.sort(logits, descending=False)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= (1 - top_p)
    drop[:, -1] = False  # the likeliest always stays
    return logits.masked_fill(drop.scatter(1, order, drop), -float("inf"))


def top_k_filter(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """TopKLogitsWarper with k per row; k = 0 keeps every token."""
    vocab = logits.size(-1)
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), vocab).long()
    descending = torch.sort(logits, descending=True).values
    kth = descending.gather(1, k - 1)
    return logits.masked_fill(logits < kth, -float("inf"))


@dataclass
class RowState:
    """The sampler's per-request tensors, row r = the batch's r-th request (not its r-th CFG row)."""

    keys: torch.Tensor  # (n,) int64: fold_seed of the request's seed and text piece
    steps: torch.Tensor  # (n,) int64: tokens sampled so far
    params: torch.Tensor  # (n, PARAMETER_COLUMNS) float32
    seen: torch.Tensor  # (n, vocab) bool: the token history the repetition penalty reads

    def append(self, other: RowState) -> RowState:
        return RowState(*(torch.cat([a, b]) for a, b in zip(self._fields(), other._fields(), strict=True)))

    def select(self, index: torch.Tensor) -> RowState:
        return RowState(*(field.index_select(0, index) for field in self._fields()))

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return (self.keys, self.steps, self.params, self.seen)


def row_state(key: int, params: Sequence[float], start_token: int, vocab: int, device: torch.device | str) -> RowState:
    """A request's row before its first token: its history holds the start-of-speech token, as upstream's."""
    seen = torch.zeros(1, vocab, dtype=torch.bool, device=device)
    seen[0, start_token] = True
    return RowState(
        keys=torch.tensor([key], dtype=torch.int64, device=device),
        steps=torch.zeros(1, dtype=torch.int64, device=device),
        params=torch.tensor([list(params)], dtype=torch.float32, device=device),
        seen=seen,
    )


# Multilingual's alignment analyzer adjusts a request's CFG-combined logits (rows, vocab) before the
# filters: given the batch's combined logits, returns them adjusted (or the same tensor).
LogitsHook = Callable[[torch.Tensor], torch.Tensor]


def cfg_scores(logits: torch.Tensor, state: RowState, hook: LogitsHook | None = None) -> torch.Tensor:
    """Standard and multilingual: `logits` holds each request's conditional and unconditional rows,
    interleaved (2n, vocab). Returns the (n, vocab) scores a token is drawn from."""
    p = state.params
    pairs = logits.float().view(-1, 2, logits.size(-1))
    cond, uncond = pairs[:, 0], pairs[:, 1]
    scores = cond + p[:, CFG_WEIGHT : CFG_WEIGHT + 1] * (cond - uncond)
    if hook is not None:
        scores = hook(scores)
    scores = repetition_penalty(scores, state.seen, p[:, REPETITION_PENALTY : REPETITION_PENALTY + 1])
    scores = scores / p[:, TEMPERATURE : TEMPERATURE + 1]
    scores = min_p_filter(scores, p[:, MIN_P : MIN_P + 1])
    return top_p_filter(scores, p[:, TOP_P : TOP_P + 1])


def sample_cfg(logits: torch.Tensor, state: RowState, hook: LogitsHook | None = None) -> torch.Tensor:
    """(n,) token ids, one per request, from its CFG rows."""
    return gumbel_argmax(cfg_scores(logits, state, hook), state.keys, state.steps)


def turbo_scores(logits: torch.Tensor, state: RowState) -> torch.Tensor:
    """Turbo: one row per request. Returns the (n, vocab) scores a token is drawn from."""
    p = state.params
    scores = logits.float() / p[:, TEMPERATURE : TEMPERATURE + 1]
    scores = top_k_filter(scores, p[:, TOP_K : TOP_K + 1])
    scores = top_p_filter(scores, p[:, TOP_P : TOP_P + 1])
    return repetition_penalty(scores, state.seen, p[:, REPETITION_PENALTY : REPETITION_PENALTY + 1])


def sample_turbo(logits: torch.Tensor, state: RowState) -> torch.Tensor:
    """(n,) token ids, -1 for a row with no candidate left after its first token (upstream then ends
    the request)."""
    scores = turbo_scores(logits, state)
    tokens = gumbel_argmax(scores, state.keys, state.steps)
    exhausted = torch.isneginf(scores).all(dim=-1) & (state.steps > 0)
    return tokens.masked_fill(exhausted, -1)


def record(state: RowState, tokens: torch.Tensor, forget_start: bool) -> None:
    """After a draw: the token joins each row's history and the step advances. `forget_start`: turbo's
    history is the start token before the first draw and only the sampled tokens after it."""
    if forget_start:
        state.seen.logical_and_((state.steps > 0)[:, None])
    state.seen.scatter_(1, tokens.clamp(min=0)[:, None], True)
    state.steps.add_(1)
