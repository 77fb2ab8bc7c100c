"""The flow's batched calls (predictor/engine/flow_batching.py): with a stand-in estimator, queued
calls of different lengths run as one padded pass and each task gets exactly its own rows and frames
back; with S3Gen's real flow encoder (random weights), a padded pass gives each row what it gets
alone, within float rounding; with HiFT's real convolution stack, calls of one length share a pass
and those of another run in their own."""

from __future__ import annotations

import contextlib

import greenlet
import pytest
import torch

from predictor.engine import tasks
from predictor.engine.flow_batching import BatchedCalls, EncoderBatch, EstimatorBatch, VocoderBatch


def estimator(x, mask, mu, t, spks=None, cond=None, r=None):
    """Per-frame and per-row maths only, like the real estimator on unpadded frames."""
    out = x * 2 + mu * mask + t[:, None, None] + spks.mean(dim=1)[:, None, None]
    return out if r is None else out + r[:, None, None]


def inputs(frames: int, seed: int, meanflow: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    rows = 2  # both CFG rows, as upstream's solver calls it
    return {
        "x": torch.randn(rows, 80, frames, generator=g),
        "mask": torch.ones(rows, 1, frames),
        "mu": torch.randn(rows, 80, frames, generator=g),
        "t": torch.rand(rows, generator=g),
        "spks": torch.randn(rows, 80, generator=g),
        "cond": torch.randn(rows, 80, frames, generator=g),
        "r": torch.rand(rows, generator=g) if meanflow else None,
    }


def run_as_tasks(flow: BatchedCalls, calls: list[dict]) -> list:
    results: list = [None] * len(calls)

    def body(i: int):
        def run():
            results[i] = flow(**calls[i])

        return run

    pending = [tasks.Task(body(i), greenlet.getcurrent(), lambda: False) for i in range(len(calls))]
    for task in pending:
        task.resume()  # each queues its call and waits
    assert len(flow) == len(calls)
    flow.run_pending()
    for task in pending:
        assert task.runnable
        task.resume()
        assert task.dead
    return results


def test_calls_of_different_lengths_share_one_pass_and_get_their_own_output():
    flow = EstimatorBatch(estimator, contextlib.nullcontext)
    calls = [inputs(frames, seed) for seed, frames in enumerate((37, 120, 64))]
    outputs = run_as_tasks(flow, calls)
    assert flow.calls == 1 and flow.rows_served == 6
    for call, output in zip(calls, outputs, strict=True):
        assert output.shape == call["x"].shape
        assert torch.equal(output, estimator(**call))


def test_calls_with_and_without_meanflow_input_run_in_separate_passes():
    flow = EstimatorBatch(estimator, contextlib.nullcontext)
    calls = [inputs(30, 1), inputs(40, 2, meanflow=True), inputs(50, 3)]
    outputs = run_as_tasks(flow, calls)
    assert flow.calls == 2
    for call, output in zip(calls, outputs, strict=True):
        assert torch.equal(output, estimator(**call))


def test_a_failing_pass_fails_its_calls_only():
    def fragile(**kw):
        if kw["x"].shape[0] > 2:
            raise RuntimeError("out of memory")
        return estimator(**kw)

    flow = EstimatorBatch(fragile, contextlib.nullcontext)
    calls = [inputs(20, 1), inputs(25, 2)]
    with pytest.raises(RuntimeError, match="out of memory"):
        run_as_tasks(flow, calls)
    # Outside a task the estimator runs at once, alone.
    assert torch.equal(flow(**calls[0]), estimator(**calls[0]))


def test_disabled_batching_runs_each_call_alone():
    flow = EstimatorBatch(estimator, contextlib.nullcontext, enabled=False)
    call = inputs(20, 5)
    results = []
    task = tasks.Task(lambda: results.append(flow(**call)), greenlet.getcurrent(), lambda: False)
    task.resume()  # pauses once before its call
    assert not task.dead and len(flow) == 0
    task.resume()
    assert task.dead and torch.equal(results[0], estimator(**call)) and flow.calls == 0


@pytest.mark.parametrize("awaiting", [(False, False), (False, True)])
def test_a_pass_says_whether_it_served_a_request_awaiting_its_first_audio(awaiting):
    """The scheduler holds the variant's T3 step for a tick when it did (scheduler.py)."""
    flow = EstimatorBatch(estimator, contextlib.nullcontext)
    pending = []
    for seed, first in enumerate(awaiting):
        task = tasks.Task(lambda seed=seed: flow(**inputs(16, seed)), greenlet.getcurrent(), lambda: False)
        task.awaiting_first_audio = first
        task.resume()
        pending.append(task)
    assert flow.run_pending() is any(awaiting)
    for task in pending:
        task.resume()
    assert all(task.dead for task in pending)


def test_the_flow_encoder_gives_each_padded_row_what_it_gives_alone():
    """Rows of 7 to 40 tokens: the attention masks cover the padding, and the look-ahead convolution
    at each row's end reads zeros, as alone (EncoderBatch zeroes its input there)."""
    from chatterbox.models.s3gen.s3gen import S3Token2Mel

    torch.manual_seed(0)
    encoder = S3Token2Mel().flow.encoder.eval()
    batched = EncoderBatch(encoder, contextlib.nullcontext)
    calls = [{"xs": torch.randn(1, tokens, 512), "xs_lens": torch.tensor([tokens])} for tokens in (23, 7, 40)]
    with torch.inference_mode():
        alone = [encoder(**call) for call in calls]
        outputs = run_as_tasks(batched, calls)
    assert batched.calls == 1 and batched.rows_served == 3
    for (want, want_mask), (got, got_mask) in zip(alone, outputs, strict=True):
        assert got.shape == want.shape and torch.equal(got_mask, want_mask)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():  # without the zeroed look-ahead input, the shorter rows' ends differ
        padded = torch.cat([torch.nn.functional.pad(c["xs"], (0, 0, 0, 40 - c["xs"].shape[1])) for c in calls])
        unmasked, _ = encoder(padded, torch.tensor([23, 7, 40]))
    assert not torch.allclose(unmasked[1:2, :14], alone[1][0], rtol=1e-4, atol=1e-4)


def test_hift_calls_of_one_length_share_a_pass_and_get_what_they_get_alone():
    """Three calls of 12 mel frames run as one pass; a call of 9 frames, which would need padding that
    HiFT's two-sided convolutions read, runs in a pass of its own. Each gets its lone call's waveform."""
    from chatterbox.models.s3gen.f0_predictor import ConvRNNF0Predictor
    from chatterbox.models.s3gen.hifigan import HiFTGenerator

    torch.manual_seed(0)
    hift = HiFTGenerator(
        sampling_rate=24000,
        upsample_rates=[8, 5, 3],
        upsample_kernel_sizes=[16, 11, 7],
        source_resblock_kernel_sizes=[7, 7, 11],
        source_resblock_dilation_sizes=[[1, 3, 5]] * 3,
        f0_predictor=ConvRNNF0Predictor(),
    ).eval()
    batched = VocoderBatch(hift.decode, contextlib.nullcontext)
    g = torch.Generator().manual_seed(1)
    calls = [
        {"x": torch.randn(1, 80, frames, generator=g), "s": torch.randn(1, 1, frames * 480, generator=g) * 0.1}
        for frames in (12, 9, 12, 12)
    ]
    with torch.inference_mode():
        alone = [hift.decode(**call) for call in calls]
        outputs = run_as_tasks(batched, calls)
    assert batched.calls == 2 and batched.rows_served == 4
    for want, got in zip(alone, outputs, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
