"""The scheduler loop: runs every request as a task on the torch thread, and steps each variant's T3
batch once per tick, so all active requests of a variant share each forward pass.

One tick:
1. cancelled tasks are stopped at their switch point (their T3 rows leave the batch at once);
2. every runnable task runs one slice: up to its next switch point, that is until it needs tokens
   not sampled yet, or until its vocoder needs the flow encoder or the next flow ODE step (tasks.py);
3. each variant runs the flow encoder calls and the flow ODE steps its tasks asked for, each kind as
   one batched call (flow_batching.py), then its T3 batch samples one token for each of its requests
   and runs one forward pass. Not when one of those calls was for a streamed request's first chunk:
   then the T3 step waits a tick, so the first chunk's few flow calls are all its listener waits for
   (a first chunk needs 10 ODE steps for standard; a T3 step each would add 0.65 s on 2 cores).

Variants never wait for each other's requests: every variant with work steps every tick.

S3Gen under load: a T3 step waits at most for one batched encoder and one batched estimator call per
tick, never for a whole flow run, and several vocoding requests pay for one pass. With
BATCH_VOCODER=false each request's flow call is its own slice instead (the bench compares both:
docs/benchmarks.md, "Batched engine").
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
                    task.awaiting_first_audio = False
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

        task = Task(run, greenlet.getcurrent(), cancelled)
        task.awaiting_first_audio = stream
        self.tasks.append(task)

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
            first_audio_vocoded = [calls.run_pending() for calls in loaded.s3gen_calls if len(calls)]
            if len(loaded.batch) and not any(first_audio_vocoded):
                loaded.batch.step()
        self.tasks = [task for task in self.tasks if not task.dead]
        return self.busy
