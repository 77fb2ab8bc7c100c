"""S3Gen under load: the module calls of all vocoding requests of a variant run as one batched call
per scheduler tick, for the three modules that run once per request and flow run, ODE step or
vocoder call: the flow encoder (a conformer over the run's tokens), the flow decoder's estimator,
and HiFT's convolution stack (`VocoderBatch`, calls of the same length only).

Every flow run encodes its tokens once, then solves an ODE of a few steps (standard: 10, turbo: 2);
each step is one call of the estimator (a U-Net with transformer blocks) on the request's two CFG
rows. Inside a scheduler task a wrapped module does not run the call: it queues its inputs here and
waits; at the end of the tick the scheduler runs every queued call of the variant as one forward
pass per module (`run_pending`), and each task takes its rows back at its next turn. So while
several requests vocode, they advance one stage per tick together, and a T3 step waits for one
call of each module, not one per request.

Requests bring different numbers of frames. They are right-padded to the longest, with masks that
keep the padding from reaching a real frame:
- the estimator multiplies its convolution inputs by the mask (its convolutions are causal) and turns
  the mask into an attention bias, so padded frames get no attention weight;
- the encoder masks attention by each row's length; its one look-ahead convolution, which would read
  the padding after a row's last tokens, gets zeros there, as it does alone (`EncoderBatch`).
A row in a batch then differs from the same row alone only by the float rounding of differently
shaped matmuls; a call alone in its tick runs exactly as upstream runs it.

Outside a task (a test or a script calling the engine directly), a wrapped module runs at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from . import tasks


@dataclass
class _Call:
    inputs: dict
    frames: int
    rows: int
    urgent: bool  # its request awaits its first audio
    output: Any = None
    error: BaseException | None = None
    done: bool = field(default=False)


class BatchedCalls:
    """One variant's queue of calls of one module. `enabled=False` keeps upstream's shape: each call
    runs alone, as its own slice of the tick (the task still yields first, so others' T3 steps go
    on). Subclasses say how inputs are named and stacked and how outputs are split."""

    argument_names: tuple[str, ...]  # the module's forward(), in order

    def __init__(
        self,
        forward: Callable[..., Any],
        autocast: Callable[[], contextlib.AbstractContextManager],
        enabled: bool = True,
    ):
        self._forward = forward
        self._autocast = autocast
        self.enabled = enabled
        self._pending: list[_Call] = []
        self.calls = 0  # batched forward passes run (for tests and the bench)
        self.rows_served = 0

    def __call__(self, *args, **inputs) -> Any:
        """The wrapped module: queue and wait inside a task; otherwise run now."""
        inputs.update(zip(self.argument_names, args, strict=False))
        task = tasks.current()
        if task is None:
            return self._run_alone(inputs)
        if not self.enabled:
            tasks.pause()
            return self._run_alone(inputs)
        call = _Call(
            inputs=inputs, frames=self._frames(inputs), rows=self._rows(inputs), urgent=task.awaiting_first_audio
        )
        self._pending.append(call)
        tasks.wait_until(lambda: call.done)
        if call.error is not None:
            raise call.error
        return call.output

    def __len__(self) -> int:
        return len(self._pending)

    def run_pending(self) -> bool:
        """Run every queued call as one forward pass (calls that cannot share a pass run in groups);
        returns whether one of them was for a request awaiting its first audio."""
        pending, self._pending = self._pending, []
        groups: dict[tuple, list[_Call]] = {}
        for call in pending:
            groups.setdefault(self._pass_key(call), []).append(call)
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

    def _run_group(self, calls: list[_Call]) -> list[Any]:
        self.calls += 1
        self.rows_served += sum(call.rows for call in calls)
        if len(calls) == 1:
            return [self._run_alone(calls[0].inputs)]
        frames = max(call.frames for call in calls)
        with self._autocast(), self._padding_masked(calls, frames):
            output = self._forward(**self._stack(calls, frames))
        return list(self._split(output, calls, frames))

    def _run_alone(self, inputs: dict) -> Any:
        with self._autocast():
            return self._forward(**inputs)

    # ---- what differs between modules -----------------------------------------------------------
    def _pass_key(self, call: _Call) -> tuple:
        """Calls share a pass when they give the same inputs (turbo's meanflow adds `r`)."""
        return tuple(sorted(name for name, value in call.inputs.items() if value is not None))

    def _frames(self, inputs: dict) -> int:
        raise NotImplementedError

    def _rows(self, inputs: dict) -> int:
        raise NotImplementedError

    def _stack(self, calls: list[_Call], frames: int) -> dict:
        raise NotImplementedError

    def _split(self, output: Any, calls: list[_Call], frames: int) -> Iterator[Any]:
        raise NotImplementedError

    def _padding_masked(self, calls: list[_Call], frames: int) -> contextlib.AbstractContextManager:
        """Whatever the module needs, beyond its own masks, so that padding never reaches a real frame."""
        return contextlib.nullcontext()


class EstimatorBatch(BatchedCalls):
    """The flow decoder's estimator: one ODE step of a request's CFG rows, (rows, channels, frames)."""

    argument_names = ("x", "mask", "mu", "t", "spks", "cond", "r")
    FRAME_INPUTS = ("x", "mask", "mu", "cond")  # padded on the frame axis; the rest are per row

    def _frames(self, inputs: dict) -> int:
        return int(inputs["x"].shape[-1])

    def _rows(self, inputs: dict) -> int:
        return int(inputs["x"].shape[0])

    def _stack(self, calls: list[_Call], frames: int) -> dict:
        batched: dict[str, torch.Tensor | None] = {}
        for name in calls[0].inputs:
            values = [call.inputs[name] for call in calls]
            if values[0] is None:
                batched[name] = None
            elif name in self.FRAME_INPUTS:
                batched[name] = torch.cat([F.pad(v, (0, frames - v.shape[-1])) for v in values])
            else:
                batched[name] = torch.cat(values)
        return batched

    def _split(self, output: torch.Tensor, calls: list[_Call], frames: int) -> Iterator[torch.Tensor]:
        row = 0
        for call in calls:
            yield output[row : row + call.rows, :, : call.frames]
            row += call.rows


class EncoderBatch(BatchedCalls):
    """The flow encoder: a flow run's token embeddings (rows, tokens, channels) and their lengths, in;
    its upsampled output (rows, frames, channels) and mask (rows, 1, frames), out. Its output is
    cast to float32, as the flow's next layer (not under autocast) expects."""

    argument_names = ("xs", "xs_lens")

    def __init__(self, encoder: torch.nn.Module, autocast, enabled: bool = True):
        super().__init__(encoder.forward, autocast, enabled)
        self._lookahead: Any = encoder.pre_lookahead_layer

    def _frames(self, inputs: dict) -> int:
        return int(inputs["xs"].shape[1])

    def _rows(self, inputs: dict) -> int:
        return int(inputs["xs"].shape[0])

    def _run_alone(self, inputs: dict) -> Any:
        encoded, masks = super()._run_alone(inputs)
        return encoded.float(), masks

    def _stack(self, calls: list[_Call], frames: int) -> dict:
        return {
            "xs": torch.cat([F.pad(call.inputs["xs"], (0, 0, 0, frames - call.frames)) for call in calls]),
            "xs_lens": torch.cat([call.inputs["xs_lens"] for call in calls]),
        }

    def _split(self, output, calls: list[_Call], frames: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        encoded, masks = output
        upsampling = encoded.shape[1] // frames
        row = 0
        for call in calls:
            rows, out_frames = slice(row, row + call.rows), call.frames * upsampling
            yield encoded[rows, :out_frames].float(), masks[rows, :, :out_frames]
            row += call.rows

    @contextlib.contextmanager
    def _padding_masked(self, calls: list[_Call], frames: int):
        """The look-ahead convolution reads the frames after each position; alone, past a row's end it
        reads zeros (its own padding). Its input there is the input layer's output for padding, not
        zero: zero it, for this pass only."""
        lengths = [call.frames for call in calls for _ in range(call.rows)]
        keep = (torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(-1)
        lookahead = self._lookahead
        forward = lookahead.forward

        def zero_padding_first(inputs: torch.Tensor) -> torch.Tensor:
            return forward(inputs * keep.to(device=inputs.device, dtype=inputs.dtype))

        lookahead.forward = zero_padding_first
        try:
            yield
        finally:
            lookahead.forward = forward


class VocoderBatch(BatchedCalls):
    """HiFT's convolution stack and inverse STFT (`decode`): a request's mel (1, 80, frames) and its
    excitation source (1, 1, samples), in; its waveform (1, samples), out. The f0 predictor and the
    sine source before it draw the request's own noise, and run in its task as alone.

    Only calls of the same length share a pass. HiFT's convolutions look both ways, so right-padding
    would reach a row's last frames after the first layer (its input there is no longer zero); calls
    of one length need no padding, and a row is then its lone call's within float rounding. Requests
    of a burst with the same token cap, or streamed requests in step (their chunks are counted in T3
    steps), vocode together; measured (2 threads, bf16, 8 calls of 206 frames): 1.6x faster as one."""

    argument_names = ("x", "s")

    def _pass_key(self, call: _Call) -> tuple:
        return (call.frames,)

    def _frames(self, inputs: dict) -> int:
        return int(inputs["x"].shape[-1])

    def _rows(self, inputs: dict) -> int:
        return int(inputs["x"].shape[0])

    def _stack(self, calls: list[_Call], frames: int) -> dict:
        return {name: torch.cat([call.inputs[name] for call in calls]) for name in self.argument_names}

    def _split(self, output: torch.Tensor, calls: list[_Call], frames: int) -> Iterator[torch.Tensor]:
        row = 0
        for call in calls:
            yield output[row : row + call.rows]
            row += call.rows
