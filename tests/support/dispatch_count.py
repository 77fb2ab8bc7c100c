"""What a scheduler tick costs in aten ops and host reads, counted on any device.

On a GPU every aten op is (at least) one kernel launch and every read of a device value drains the
device's queue, so these counts, taken on a CPU, say what a tick costs the host on a GPU. Host reads
are counted twice over: `_local_scalar_dense` (`.item()`, `bool(tensor)`) in the dispatcher, and
calls of the Tensor methods that copy values to Python without passing through it (`tolist`, `numpy`).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HOST_READ_METHODS = ("tolist", "numpy", "item")


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def matching(self, fragment: str) -> int:
        return sum(count for name, count in self.ops.items() if fragment in name)


@contextlib.contextmanager
def counted() -> Iterator[tuple[OpCounter, Counter[str]]]:
    """Counts aten ops and host reads inside the block: (ops, reads by method)."""
    reads: Counter[str] = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READ_METHODS}

    def counting(name):
        original = originals[name]

        def method(self, *args, **kwargs):
            reads[name] += 1
            return original(self, *args, **kwargs)

        return method

    for name in HOST_READ_METHODS:
        setattr(torch.Tensor, name, counting(name))
    try:
        with OpCounter() as ops:
            yield ops, reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def host_reads(ops: OpCounter, reads: Counter[str]) -> int:
    """Reads of device values: `.item()` goes through `_local_scalar_dense` too, so it counts once."""
    return ops.ops.get("aten._local_scalar_dense.default", 0) + reads["tolist"] + reads["numpy"]
