"""S3Gen under load: the flow decoder's estimator calls of all vocoding requests of a variant run
as one batched call per scheduler tick.

Every flow run is an ODE solve of a few steps (standard: 10, turbo: 2); each step is one call of the
estimator (a U-Net with transformer blocks) on the request's two CFG rows. Inside a scheduler task
the wrapped estimator does not run the call: it queues its inputs here and waits; at the end of
the tick the scheduler runs every queued call of the variant as one forward pass (`run_pending`),
and each task takes its rows back at its next turn. So while several requests vocode, they advance
one ODE step per tick together, and a T3 step waits for one estimator call, not one per request.

Requests bring different numbers of mel frames. They are right-padded to the longest with the mask
at zero over the padding: the estimator multiplies its convolution inputs by the mask (its
convolutions are causal, so padding on the right never reaches a real frame) and turns the mask into
an attention bias, so padded frames get no attention weight. A row in a batch then differs from
the same row alone only by the float rounding of differently shaped matmuls; a call alone in its
tick runs exactly as upstream runs it.

Outside a task (a test or a script calling the engine directly), the wrapped estimator runs at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import tasks

ESTIMATOR_ARGS = ("x", "mask", "mu", "t", "spks", "cond", "r")  # the estimator's forward(), in order
FRAME_INPUTS = ("x", "mask", "mu", "cond")  # (rows, channels, frames): padded on the frame axis; the rest are per row


@dataclass
class _Call:
    inputs: dict
    frames: int
    rows: int
    urgent: bool  # its request awaits its first audio
    output: torch.Tensor | None = None
    error: BaseException | None = None
    done: bool = field(default=False)


class FlowBatch:
    """One variant's queue of estimator calls. `enabled=False` keeps upstream's shape: each call runs
    alone, as its own slice of the tick (the task still yields first, so others' T3 steps go on)."""

    def __init__(
        self,
        estimator_forward: Callable[..., torch.Tensor],
        autocast: Callable[[], contextlib.AbstractContextManager],
        enabled: bool = True,
    ):
        self._forward = estimator_forward
        self._autocast = autocast
        self.enabled = enabled
        self._pending: list[_Call] = []
        self.calls = 0  # batched forward passes run (for tests and the bench)
        self.rows_served = 0

    def __call__(self, *args, **inputs) -> torch.Tensor:
        """The wrapped estimator: queue and wait inside a task; otherwise run now."""
        # Upstream's CFG solver passes keywords, its meanflow solver (turbo) `x` by position.
        inputs.update(zip(ESTIMATOR_ARGS, args, strict=False))
        task = tasks.current()
        if task is None:
            with self._autocast():
                return self._forward(**inputs)
        if not self.enabled:
            tasks.pause()
            with self._autocast():
                return self._forward(**inputs)
        call = _Call(
            inputs=inputs,
            frames=int(inputs["x"].shape[-1]),
            rows=int(inputs["x"].shape[0]),
            urgent=task.awaiting_first_audio,
        )
        self._pending.append(call)
        tasks.wait_until(lambda: call.done)
        if call.error is not None:
            raise call.error
        assert call.output is not None
        return call.output

    def __len__(self) -> int:
        return len(self._pending)

    def run_pending(self) -> bool:
        """Run every queued call as one forward pass (calls that cannot share a pass run in groups);
        returns whether one of them was for a request awaiting its first audio."""
        pending, self._pending = self._pending, []
        groups: dict[tuple, list[_Call]] = {}
        for call in pending:
            # Calls share a pass when they give the same inputs (turbo's meanflow adds `r`).
            key = tuple(sorted(name for name, value in call.inputs.items() if value is not None))
            groups.setdefault(key, []).append(call)
        for calls in groups.values():
            try:
                outputs = self._run_group(calls)
            except Exception as exc:  # every request in the failed pass fails; the rest go on
                for call in calls:
                    call.error, call.done = exc, True
                continue
            for call, output in zip(calls, outputs, strict=True):
                call.output, call.done = output, True
        return any(call.urgent for call in pending)

    def _run_group(self, calls: list[_Call]) -> list[torch.Tensor]:
        self.calls += 1
        self.rows_served += sum(call.rows for call in calls)
        if len(calls) == 1:
            with self._autocast():
                return [self._forward(**calls[0].inputs)]
        frames = max(call.frames for call in calls)
        batched: dict[str, torch.Tensor | None] = {}
        for name in calls[0].inputs:
            values = [call.inputs[name] for call in calls]
            if values[0] is None:
                batched[name] = None
            elif name in FRAME_INPUTS:
                batched[name] = torch.cat([F.pad(v, (0, frames - v.shape[-1])) for v in values])
            else:
                batched[name] = torch.cat(values)
        with self._autocast():
            output = self._forward(**batched)
        results, row = [], 0
        for call in calls:
            results.append(output[row : row + call.rows, :, : call.frames])
            row += call.rows
        return results
