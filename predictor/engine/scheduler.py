"""The scheduler loop: runs every request as a task on the torch thread, and steps each variant's T3
batch once per tick, so all active requests of a variant share each forward pass.

One tick:
1. cancelled tasks are stopped at their switch point (their T3 rows leave the batch at once);
2. every runnable task runs one slice: up to its next switch point, that is until it needs tokens
   not sampled yet, or until its vocoder reaches the next flow ODE step (tasks.py);
3. each variant's batch samples one token for each of its requests and runs one forward pass.

Variants never wait for each other's requests: every variant with decoding requests steps every tick.

S3Gen under load: vocoder work is sliced, not batched. Each flow ODE step (one estimator call,
both CFG rows) is a slice, so a T3 step waits at most one slice per vocoding request, never a whole
flow run. Batching several requests' flow calls was measured on the 2-core CPU: the estimator's
time grows in proportion to its rows at the 500-600 frames a standard request brings (its 10 s
prompt), so it gains nothing there, and upstream's flow is written for one utterance at a time.
See the report in the README for figures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import greenlet

from . import tasks
from .tasks import Task

END = object()  # delivered after a task's last chunk


class Scheduler:
    """Owned by the torch thread: every method must be called there."""

    def __init__(self, engine):
        self.engine = engine
        self.tasks: list[Task] = []

    def start(
        self,
        request,
        stream: bool,
        cancelled: Callable[[], bool],
        deliver: Callable[[Any], None],
        on_exit: Callable[[], None],
        may_continue: Callable[[], bool] = lambda: True,
    ) -> None:
        """Run `request` as a task. `deliver` gets each AudioChunk, then END or the exception that
        ended it (nothing when it was cancelled); `on_exit` is called before that, once it is gone.
        After each chunk the task waits until `may_continue()` (a client that reads slowly holds
        back its own vocoder work; its T3 rows keep decoding in the batch)."""

        def run() -> None:
            outcome: Any = END
            if cancelled():  # before it ever ran
                on_exit()
                return
            try:
                for chunk in self.engine.chunks(request, cancelled=cancelled, stream=stream):
                    deliver(chunk)
                    tasks.wait_until(lambda: may_continue() or cancelled())
            except greenlet.GreenletExit:
                outcome = None
            except Exception as exc:  # the request failed: its client gets the error, others go on
                outcome = exc
            finally:
                on_exit()
            if outcome is not None:
                deliver(outcome)

        self.tasks.append(Task(run, greenlet.getcurrent(), cancelled))

    @property
    def busy(self) -> bool:
        return bool(self.tasks)

    def tick(self) -> bool:
        """One round; returns whether work remains."""
        for task in self.tasks:
            if task.cancelled() and not task.dead:
                if task.started:
                    task.throw(greenlet.GreenletExit)
                else:
                    task.resume()
        for task in self.tasks:
            if task.runnable:
                task.resume()
        for loaded in self.engine.variants.values():
            if len(loaded.batch):
                loaded.batch.step()
        self.tasks = [task for task in self.tasks if not task.dead]
        return self.busy
