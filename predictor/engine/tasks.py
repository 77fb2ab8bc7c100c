"""Cooperative request tasks on the one torch thread (greenlets).

Each request runs as a greenlet started by the scheduler (scheduler.py). It hands control back
at two kinds of points:
- `wait_until(ready)`: it needs speech tokens that the next batched T3 step will sample, or the
  output of a flow encoder call or ODE step that the tick's batched call will compute
  (flow_batching.py);
- `pause()`: a slice point (before a flow call that runs alone), so that one request's S3Gen
  run does not hold every other request's T3 steps for seconds.

Greenlets share the OS thread, so torch keeps one OpenMP pool (see torch_thread.py). Outside a
task (a test or script calling the engine directly) both functions do nothing special: `pause()`
returns at once and `wait_until` is never reached, because the engine then decodes alone.

At a switch the global RNG state travels with the task: S3Gen draws noise from it, and the request
that seeded it (for an upstream-identical render) must find it as it left it. Nothing else
thread-local may span a switch: autocast and locks are entered and left between slice points.
"""

from __future__ import annotations

from collections.abc import Callable

import greenlet
import torch


class Task(greenlet.greenlet):
    """One request's greenlet. `waiting` holds the condition it waits for (None: runnable)."""

    def __init__(self, run: Callable[[], None], parent: greenlet.greenlet, cancelled: Callable[[], bool]):
        super().__init__(run, parent)
        self.waiting: Callable[[], bool] | None = None
        self.cancelled = cancelled
        # A streamed request before its first chunk: its flow calls go before its variant's T3
        # step in a tick (scheduler.py), since they are all its listener waits for.
        self.awaiting_first_audio = False
        self.started = False
        self._rng: list[torch.Tensor] | None = None

    @property
    def runnable(self) -> bool:
        return not self.dead and (self.waiting is None or self.waiting())

    def resume(self) -> None:
        """Run until the task's next switch point (or its end); called by the scheduler."""
        self.waiting = None
        self.started = True
        self.switch()

    def _yield(self) -> None:
        self._rng = _rng_states()
        try:
            self.parent.switch()
        finally:
            _set_rng_states(self._rng)


def current() -> Task | None:
    task = greenlet.getcurrent()
    return task if isinstance(task, Task) else None


def pause() -> None:
    """A slice point: let the scheduler run its other work before going on."""
    task = current()
    if task is not None:
        task._yield()


def wait_until(ready: Callable[[], bool]) -> None:
    """Give the torch thread to others until `ready()`; only valid inside a task."""
    task = current()
    if task is None:
        raise RuntimeError("wait_until outside a scheduler task")
    while not ready():
        task.waiting = ready
        task._yield()


def _rng_states() -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states.append(torch.cuda.get_rng_state())
    return states


def _set_rng_states(states: list[torch.Tensor]) -> None:
    torch.set_rng_state(states[0])
    if len(states) > 1:
        torch.cuda.set_rng_state(states[1])
