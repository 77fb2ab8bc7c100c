"""The fast sampler (predictor/engine/sampling.py): its filters are transformers' processors, its
draws follow the filtered distribution (chi-square over many seeds), and a row's draw depends only on
its own seed, step and logits, never on the rest of the batch."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from predictor.engine import sampling
from predictor.engine.sampling import RowState

VOCAB = 300
START = 7
P_VALUE_FLOOR = 1e-3  # fixed seeds: the outcome is deterministic, the floor says how unlikely a pass by chance is


def state(params: list[list[float]], keys: list[int], history: list[list[int]], steps: list[int]) -> RowState:
    seen = torch.zeros(len(params), VOCAB, dtype=torch.bool)
    for row, ids in enumerate(history):
        seen[row, ids] = True
    return RowState(
        keys=torch.tensor(keys, dtype=torch.int64),
        steps=torch.tensor(steps, dtype=torch.int64),
        params=torch.tensor(params, dtype=torch.float32),
        seen=seen,
    )


def columns(temperature=1.0, top_p=1.0, min_p=0.0, top_k=0, penalty=1.0, cfg=0.0) -> list[float]:
    row = [0.0] * sampling.PARAMETER_COLUMNS
    row[sampling.TEMPERATURE], row[sampling.TOP_P], row[sampling.MIN_P] = temperature, top_p, min_p
    row[sampling.TOP_K], row[sampling.REPETITION_PENALTY], row[sampling.CFG_WEIGHT] = top_k, penalty, cfg
    return row


def ids(history: list[int]) -> torch.LongTensor:
    return cast(torch.LongTensor, torch.tensor([history]))


CFG_ROWS = [
    (columns(0.7, 0.9, 0.1, penalty=1.3, cfg=0.4), [START, 3, 3, 90]),
    (columns(1.0, 1.0, 0.0, penalty=1.0, cfg=0.0), [START]),
    (columns(1.3, 0.5, 0.05, penalty=2.0, cfg=1.0), [START, 1, 2, 250]),
    (columns(0.4, 0.0, 0.3, penalty=1.1, cfg=0.6), [START, 5]),
]
TURBO_ROWS = [
    (columns(0.9, 0.8, top_k=50, penalty=1.1), [12, 40]),
    (columns(1.0, 1.0, top_k=0, penalty=1.0), [START]),
    (columns(0.6, 0.95, top_k=1000, penalty=1.2), [1, 2, 3]),
    (columns(1.5, 0.3, top_k=3, penalty=1.5), [299]),
]


def upstream_cfg_scores(logits: torch.Tensor, row: list[float], history: list[int]) -> torch.Tensor:
    """decode.CfgDecoder.sample's processors (upstream T3.inference), one request."""
    cond, uncond = logits[0:1].float(), logits[1:2].float()
    scores = cond + row[sampling.CFG_WEIGHT] * (cond - uncond)
    scores = RepetitionPenaltyLogitsProcessor(penalty=row[sampling.REPETITION_PENALTY])(ids(history), scores)
    if row[sampling.TEMPERATURE] != 1.0:
        scores = scores / row[sampling.TEMPERATURE]
    scores = MinPLogitsWarper(min_p=row[sampling.MIN_P])(ids(history), scores)
    return TopPLogitsWarper(top_p=row[sampling.TOP_P])(ids(history), scores)


def upstream_turbo_scores(logits: torch.Tensor, row: list[float], history: list[int]) -> torch.Tensor:
    """decode.TurboDecoder.sample's processors (upstream T3.inference_turbo), one request."""
    scores = logits.float()
    if row[sampling.TEMPERATURE] != 1.0:
        scores = TemperatureLogitsWarper(row[sampling.TEMPERATURE])(ids(history), scores)
    if row[sampling.TOP_K] > 0:
        scores = TopKLogitsWarper(int(row[sampling.TOP_K]))(ids(history), scores)
    if row[sampling.TOP_P] < 1.0:
        scores = TopPLogitsWarper(row[sampling.TOP_P])(ids(history), scores)
    if row[sampling.REPETITION_PENALTY] != 1.0:
        scores = RepetitionPenaltyLogitsProcessor(row[sampling.REPETITION_PENALTY])(ids(history), scores)
    return scores


def test_cfg_filters_are_upstreams_processors_row_by_row():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2 * len(CFG_ROWS), VOCAB, generator=generator) * 3
    batch = state([r for r, _ in CFG_ROWS], [1, 2, 3, 4], [h for _, h in CFG_ROWS], [0] * len(CFG_ROWS))
    ours = sampling.cfg_scores(logits, batch)
    for index, (row, history) in enumerate(CFG_ROWS):
        expected = upstream_cfg_scores(logits[2 * index : 2 * index + 2], row, history)
        torch.testing.assert_close(ours[index : index + 1], expected, rtol=0, atol=0)


def test_turbo_filters_are_upstreams_processors_row_by_row():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(len(TURBO_ROWS), VOCAB, generator=generator) * 3
    batch = state([r for r, _ in TURBO_ROWS], [1, 2, 3, 4], [h for _, h in TURBO_ROWS], [1] * len(TURBO_ROWS))
    ours = sampling.turbo_scores(logits, batch)
    for index, (row, history) in enumerate(TURBO_ROWS):
        expected = upstream_turbo_scores(logits[index : index + 1], row, history)
        # The processors upstream skips are exact identities here, except that top_p = 1 also drops
        # tokens whose probability underflows to exactly zero: none do at these logits.
        torch.testing.assert_close(ours[index : index + 1], expected, rtol=0, atol=0)


def draw_counts(scores: torch.Tensor, draws: int, by: str) -> np.ndarray:
    """Draws from one row of scores: over `draws` seeds at step 0 (by='seed'), or one seed over
    `draws` steps (by='step'); all in one batched call."""
    rows = scores.expand(draws, -1)
    if by == "seed":
        keys, steps = torch.arange(draws, dtype=torch.int64) * 7919 + 11, torch.zeros(draws, dtype=torch.int64)
    else:
        keys, steps = torch.full((draws,), 12345, dtype=torch.int64), torch.arange(draws, dtype=torch.int64)
    tokens = sampling.gumbel_argmax(rows, keys, steps)
    return np.bincount(tokens.numpy(), minlength=scores.size(-1))


def chi_square_p(counts: np.ndarray, probs: np.ndarray) -> float:
    """p-value of the counts under `probs`, bins with expected counts under 5 pooled."""
    expected = probs * counts.sum()
    small = expected < 5
    observed = np.append(counts[~small], counts[small].sum())
    wanted = np.append(expected[~small], expected[small].sum())
    if wanted[-1] == 0:
        observed, wanted = observed[:-1], wanted[:-1]
        assert counts[small].sum() == 0, "drew a token the distribution excludes"
    return float(chisquare(observed, wanted * observed.sum() / wanted.sum()).pvalue)


@pytest.mark.parametrize("by", ["seed", "step"])
@pytest.mark.parametrize("variant", ["cfg", "turbo"])
def test_draws_follow_the_upstream_distribution(variant, by):
    """Over 40,000 draws, the tokens' frequencies fit softmax of the upstream-filtered scores."""
    generator = torch.Generator().manual_seed(5)
    if variant == "cfg":
        row, history = CFG_ROWS[0]
        logits = torch.randn(2, VOCAB, generator=generator) * 0.3
        scores = upstream_cfg_scores(logits, row, history)
    else:
        row, history = TURBO_ROWS[0]
        logits = torch.randn(1, VOCAB, generator=generator) * 2
        scores = upstream_turbo_scores(logits, row, history)
    probs = torch.softmax(scores, dim=-1)[0].double().numpy()
    assert (probs > 0).sum() > 10  # a distribution with many candidates, not a near-certain token
    counts = draw_counts(scores, 40_000, by)
    assert counts[probs == 0].sum() == 0  # filtered tokens are never drawn
    assert chi_square_p(counts, probs) > P_VALUE_FLOOR


def test_the_chi_square_check_rejects_a_wrong_distribution():
    """The check above can fail: draws at temperature 1 do not fit the temperature-0.7 distribution."""
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(1, VOCAB, generator=generator) * 2
    counts = draw_counts(logits, 40_000, "seed")
    wrong = torch.softmax(logits / 0.7, dim=-1)[0].double().numpy()
    right = torch.softmax(logits, dim=-1)[0].double().numpy()
    assert chi_square_p(counts, right) > P_VALUE_FLOOR
    assert chi_square_p(counts, wrong) < 1e-6


def test_a_rows_draw_does_not_depend_on_the_rest_of_the_batch():
    generator = torch.Generator().manual_seed(9)
    logits = torch.randn(len(TURBO_ROWS), VOCAB, generator=generator)
    batch = state([r for r, _ in TURBO_ROWS], [10, 20, 30, 40], [h for _, h in TURBO_ROWS], [3, 0, 8, 1])
    together = sampling.sample_turbo(logits, batch)
    for index in range(len(TURBO_ROWS)):
        alone = sampling.sample_turbo(logits[index : index + 1], batch.select(torch.tensor([index])))
        assert int(alone) == int(together[index])
    reordered = sampling.sample_turbo(logits.flip(0), batch.select(torch.tensor([3, 2, 1, 0])))
    assert reordered.flip(0).tolist() == together.tolist()


def test_noise_is_a_function_of_key_step_and_token():
    keys, steps = torch.tensor([1, 1, 2]), torch.tensor([0, 1, 0])
    noise = sampling.counter_uniform(keys, steps, 64)
    assert torch.equal(noise, sampling.counter_uniform(keys, steps, 64))
    assert not torch.equal(noise[0], noise[1]) and not torch.equal(noise[0], noise[2])
    assert float(noise.min()) > 0 and float(noise.max()) < 1
    assert sampling.fold_seed(1234, 0) != sampling.fold_seed(1234, 1) != sampling.fold_seed(1235, 0)
    assert 0 <= sampling.fold_seed(2**62 + 5, 3) < 2**32


def test_record_keeps_the_history_upstream_keeps():
    batch = state([columns(), columns()], [1, 2], [[START], [START]], [0, 0])
    sampling.record(batch, torch.tensor([4, 5]), forget_start=True)  # turbo: the start token is forgotten
    assert batch.seen[0].nonzero().flatten().tolist() == [4] and batch.steps.tolist() == [1, 1]
    sampling.record(batch, torch.tensor([6, -1]), forget_start=True)
    assert batch.seen[0].nonzero().flatten().tolist() == [4, 6]
    cfg = state([columns()], [1], [[START]], [0])
    sampling.record(cfg, torch.tensor([4]), forget_start=False)
    assert cfg.seen[0].nonzero().flatten().tolist() == [4, START]
