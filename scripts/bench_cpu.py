"""How much CPU other processes took while the benchmark timed a call (Linux /proc; elsewhere: unknown).

On a shared machine, other work competing for the cores (and OpenMP threads spinning against it)
can slow a call several times over; the benchmark reports this next to its numbers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

try:
    TICK = 1.0 / os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    TICK = 0.01


def _system_busy_seconds() -> float | None:
    """CPU seconds all processes spent busy, machine-wide (user, nice, system, irq, softirq)."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) * TICK


def _process_seconds(pid: int) -> float:
    """CPU seconds of one process (all its threads, and its children once reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            rest = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # fields after the command name: state is rest[0]; utime, stime, cutime, cstime are fields 14-17
    return sum(int(x) for x in rest[11:15]) * TICK


@dataclass
class Window:
    wall_s: float = 0.0
    other_cores: float | None = None  # average cores busy outside our processes during the window


class CpuMonitor:
    def __init__(self, pids: list[int]):
        self.pids = pids  # our processes: this one and the predictor

    def _ours(self) -> float:
        return sum(_process_seconds(pid) for pid in self.pids)

    @contextmanager
    def window(self) -> Iterator[Window]:
        result = Window()
        busy0, ours0, wall0 = _system_busy_seconds(), self._ours(), time.monotonic()
        try:
            yield result
        finally:
            busy1, ours1 = _system_busy_seconds(), self._ours()
            result.wall_s = time.monotonic() - wall0
            if busy0 is not None and busy1 is not None and result.wall_s > 0:
                result.other_cores = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / result.wall_s
