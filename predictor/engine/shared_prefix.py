"""Decode attention for a T3 batch whose requests share a voice's prompt prefix, reading the prefix once.

Every request of a voice starts with the same conditioning positions (prompt_prefix.py: turbo 376 of
them), and the batch's KV cache holds a copy in each request's rows. A decode step's attention reads
every row's keys and values in full, so at 8 turbo requests it read 8 copies of the same 376
positions: on the 2-core CPU (float32 attention, see attention.py) 1.6 ms a layer at about 19 GB/s,
38 ms of a 121 ms step, growing with the batch while the weights' read does not.

Here the prefix's part of the attention is computed once per group of rows that share a prefix: the
group's queries against the prefix's own keys and values (a matmul of n query rows, which reads them
once); each row's own part (its text and what it has generated) against its own rows of the cache;
the two parts merged through their softmax maxima and sums, which gives softmax over the whole row,
exactly in real arithmetic, within float rounding in float32 (tested against SDPA). The prefix is
read from one row's copy in the cache (float32 there already; the prompt prefix itself is bf16).

Used where attention.py's float32 attention is (a reduced-precision T3 on a CPU), for decode steps of
the fast sampler's batch (T3Batch plans it on each join and leave). A float32 T3 (the conformance and
batched-exactness tests) and CUDA keep SDPA.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .prompt_prefix import PromptPrefix

# Below these the extra ops cost more than the reads saved. Measured in-process on the 2-core CPU, bf16,
# median ticks: turbo (376 positions) 2 requests 76.5 ms against 75.3 without, 4: 101.2 against
# 103.7, 8: 103.6 against 115.3; standard's and multilingual's 34 positions, 4 requests: no faster.
MIN_SHARED_POSITIONS = 128
MIN_SHARED_REQUESTS = 4


@dataclass
class SharedPrefixPlan:
    """The rows of the batch's largest group of requests sharing a prompt prefix, and where it is."""

    rows: torch.Tensor | None  # (n,) the rows that share it; None: every row
    source_row: int  # a row whose cache holds the prefix, read for the whole group
    start: int  # window column where the prefix begins in that row
    length: int
    own_start: torch.Tensor  # (rows,) window column where each row's own keys begin
    first_own_column: int  # the smallest of them: the own part reads columns from here on
    hidden: torch.Tensor | None = None  # (rows, 1, 1, length + own columns): True where a row must not look

    @staticmethod
    def build(
        prefixes: Sequence[PromptPrefix | None], padding: Sequence[int], rows_per_member: int, device: torch.device
    ) -> SharedPrefixPlan | None:
        """The plan for members with these prompt prefixes (the same object: the same prefix) and
        left padding, or None when too few members share one long enough to pay. Members outside the
        largest group attend over their whole row, prefix included, as without a plan."""
        members_of: dict[int, tuple[PromptPrefix, list[int]]] = {}
        for index, prefix in enumerate(prefixes):
            if prefix is not None:
                members_of.setdefault(id(prefix), (prefix, []))[1].append(index)
        prefix, members = max(members_of.values(), key=lambda group: len(group[1]), default=(None, []))
        if prefix is None or len(members) < MIN_SHARED_REQUESTS or prefix.length < MIN_SHARED_POSITIONS:
            return None
        own_start = [pad for pad in padding for _ in range(rows_per_member)]
        rows = [member * rows_per_member + r for member in members for r in range(rows_per_member)]
        for row in rows:
            own_start[row] += prefix.length
        every_row = rows == list(range(len(own_start)))
        return SharedPrefixPlan(
            rows=None if every_row else torch.tensor(rows, device=device),
            source_row=rows[0],
            start=padding[members[0]],
            length=prefix.length,
            own_start=torch.tensor(own_start, device=device),
            first_own_column=min(own_start),
        )

    def begin_step(self, columns: int) -> None:
        """Before a forward over a window of `columns` (the new one included): which of the prefix's
        and the own columns each row must not see this step."""
        own = torch.arange(self.first_own_column, columns, device=self.own_start.device)
        own_hidden = own[None, :] < self.own_start[:, None]
        prefix_hidden = torch.zeros(len(self.own_start), self.length, dtype=torch.bool, device=own.device)
        if self.rows is not None:
            prefix_hidden[:] = True
            prefix_hidden[self.rows] = False
        self.hidden = torch.cat([prefix_hidden, own_hidden], dim=1)[:, None, None, :]


_active = threading.local()


@contextlib.contextmanager
def planned(plan: SharedPrefixPlan | None) -> Iterator[None]:
    """Make `plan` the one `attend` uses for the passes run inside (a batch's forward)."""
    _active.plan = plan
    try:
        yield
    finally:
        _active.plan = None


def active_plan() -> SharedPrefixPlan | None:
    return getattr(_active, "plan", None)


def attend(
    plan: SharedPrefixPlan, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float
) -> torch.Tensor:
    """Attention of one decode query per row (rows, heads, 1, dim) over the window `key`/`value`
    (rows, heads, columns, dim), in float32; returns (rows, 1, heads, dim) as transformers' SDPA does.
    One softmax over [the shared prefix's columns, each row's own columns]."""
    assert plan.hidden is not None  # begin_step ran
    rows, heads, _, dim = query.shape
    q = query.float().contiguous()  # GPT-2 hands over a strided view of its projections
    first, length = plan.first_own_column, plan.length
    columns = key.shape[-2] - first
    prefix = slice(plan.start, plan.start + length)
    # The prefix's keys once, from one row: every row's query against them in one matmul per head.
    prefix_keys = key[plan.source_row, :, prefix]  # (heads, length, dim)
    by_head = q.view(rows, heads, dim).transpose(0, 1)  # (heads, rows, dim)
    prefix_scores = torch.bmm(by_head, prefix_keys.transpose(1, 2)).transpose(0, 1)[
        :, :, None
    ]  # (rows, heads, 1, length)
    # Each row's own keys: one matmul per row and head over the columns after the prefix.
    own_keys = key[:, :, first:].reshape(rows * heads, columns, dim)
    own_scores = torch.bmm(q.view(rows * heads, 1, dim), own_keys.transpose(1, 2)).view(rows, heads, 1, columns)
    scores = torch.cat([prefix_scores, own_scores], dim=-1).mul_(scale).masked_fill_(plan.hidden, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    prefix_part = torch.bmm(
        weights[..., :length].reshape(rows, heads, length).transpose(0, 1), value[plan.source_row, :, prefix]
    )
    own_values = value[:, :, first:].reshape(rows * heads, columns, dim)
    own_part = torch.bmm(weights[..., length:].reshape(rows * heads, 1, columns), own_values)
    out = own_part.view(rows, heads, dim).add_(prefix_part.transpose(0, 1))
    return out[:, None].to(query.dtype)
