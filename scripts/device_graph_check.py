"""CUDA_GRAPHS=on against the eager path, in-process (turbo): the check that decides whether the
captured static step may become the default (docs/engine.md, "The GPU path").

    python -m scripts.device_graph_check --weights DIR --out DIR [--device cuda] [--levels 1,8,32,64]
        [--tokens 60] [--compare 4]

1. Same tokens: `--compare` requests with different seeds and parameters decode together in the
   static batch (captured graphs on CUDA, the same step uncaptured on a CPU) and each alone in the
   eager batch; the tokens must match (bf16 rounding may flip a near-tie: the report counts them).
2. Step time: for each level N, N requests in the scheduler's batch, the mean wall time of a steady
   tick, static batch against the eager batch, in the same process.
Writes `graphs.md` and `graphs.json` under `--out`; exits non-zero when no request matched.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from predictor.config import PredictorSettings
from predictor.engine.engine import ChatterboxEngine
from predictor.engine.scheduler import Scheduler

TEXT = "Graphs replay the whole decode step with one launch, request {i}."
JOIN_TICKS = 3
TIMED_TICKS = 10


class TokensOnly:
    """The engine as the scheduler sees it, decoding tokens without vocoding (T3 ticks only)."""

    def __init__(self, engine: ChatterboxEngine):
        self.engine = engine
        self.variants = engine.variants
        self.recorded: dict[int, list[int]] = {}

    def chunks(self, request, cancelled, stream):
        tokens = self.recorded.setdefault(request.seed, [])
        tokens.extend(speech_tokens(self.engine, request))
        yield from ()


def speech_tokens(engine: ChatterboxEngine, request):
    loaded = engine.variants[request.variant]
    generator = torch.Generator(device=engine.device).manual_seed(request.seed)
    t3_cond = engine._t3_cond(loaded, request)
    prefix = engine._prefix_lookup(loaded, request)
    return engine._speech_tokens(loaded, request.pieces[0], t3_cond, request.params, generator, prefix)


def requests_for(engine: ChatterboxEngine, count: int, tokens: int, seed: int) -> list:
    params = [
        {"temperature": 0.8, "top_k": 1000, "top_p": 0.95},
        {"temperature": 0.6, "top_k": 50, "top_p": 0.8, "repetition_penalty": 1.3},
        {"temperature": 1.1, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0},
    ]
    return [
        engine.prepare("turbo", TEXT.format(i=i), {**params[i % 3], "seed": seed + i, "max_new_tokens": tokens})
        for i in range(count)
    ]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def compare_tokens(engine: ChatterboxEngine, count: int, tokens: int) -> dict:
    requests = requests_for(engine, count, tokens, seed=500)
    with torch.inference_mode():
        alone = {r.seed: list(speech_tokens(engine, r)) for r in requests}  # outside a task: the eager batch
        runner = TokensOnly(engine)
        scheduler = Scheduler(runner)
        for request in requests:
            scheduler.start(request, False, lambda: False, lambda item: None, lambda: None)
        while scheduler.tick():
            pass
    matched = [seed for seed, expected in alone.items() if runner.recorded.get(seed) == expected]
    first_difference = {
        seed: next((k for k, (a, b) in enumerate(zip(expected, runner.recorded.get(seed, []))) if a != b), None)
        for seed, expected in alone.items()
        if seed not in matched
    }
    return {"requests": count, "matched": len(matched), "first_difference": first_difference}


def tick_seconds(engine: ChatterboxEngine, batch, level: int, tokens: int) -> float:
    """Mean wall time of a steady tick with `level` requests in `batch` (the variant's batch meanwhile)."""
    loaded = engine.variants["turbo"]
    shared, loaded.batch = loaded.batch, batch
    try:
        scheduler = Scheduler(TokensOnly(engine))
        times = []
        with torch.inference_mode():
            for request in requests_for(engine, level, tokens, seed=900):
                scheduler.start(request, False, lambda: False, lambda item: None, lambda: None)
            for _ in range(JOIN_TICKS):
                scheduler.tick()
            for _ in range(TIMED_TICKS):
                sync(engine.device)
                started = time.perf_counter()
                scheduler.tick()
                sync(engine.device)
                times.append(time.perf_counter() - started)
            for task in scheduler.tasks:
                task.cancelled = lambda: True
            while scheduler.tick():
                pass
        return statistics.mean(times)
    finally:
        loaded.batch = shared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.device_graph_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--levels", default="1,8,32,64")
    parser.add_argument("--tokens", type=int, default=60, help="token cap per request in the comparison")
    parser.add_argument("--compare", type=int, default=4, help="requests compared token for token")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    steady_cap = JOIN_TICKS + TIMED_TICKS + 5
    settings = PredictorSettings.model_validate(
        {
            "model_dir": str(args.weights),
            "load_standard": False,
            "load_turbo": True,
            "device": args.device,
            "dtype": args.dtype,
            "cuda_graphs": "on",
            "cuda_graph_batch_capacity": max(levels + [args.compare]),
            "max_new_tokens": max(args.tokens, steady_cap),
            "warm_up": "off",
        }
    )
    started = time.perf_counter()
    engine = ChatterboxEngine(settings)
    engine.load()
    static = engine.variants["turbo"].batch
    report: dict = {"device": args.device, "load_s": time.perf_counter() - started}
    report["graphs"] = sorted(getattr(static, "graphs", {}))
    report["tokens"] = compare_tokens(engine, args.compare, args.tokens)
    print(f"tokens: {report['tokens']}", flush=True)
    eager = static.fresh()
    report["ticks"] = []
    for level in levels:
        row = {
            "level": level,
            "static_ms": 1000 * tick_seconds(engine, static, level, steady_cap),
            "eager_ms": 1000 * tick_seconds(engine, eager, level, steady_cap),
        }
        report["ticks"].append(row)
        print(f"tick at {level}: {row}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "graphs.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"CUDA_GRAPHS=on against the eager batch (turbo, {args.device}, DTYPE={args.dtype}; "
        f"graphs captured for {report['graphs'] or 'none (not CUDA)'})",
        "",
        f"Same tokens: {report['tokens']['matched']}/{report['tokens']['requests']} requests "
        f"({args.tokens} tokens each; first differences {report['tokens']['first_difference'] or 'none'})",
        "",
        "| requests | static tick ms | eager tick ms | eager ÷ static | tokens/s static |",
        "|---|---|---|---|---|",
    ]
    for row in report["ticks"]:
        lines.append(
            f"| {row['level']} | {row['static_ms']:.1f} | {row['eager_ms']:.1f} | "
            f"{row['eager_ms'] / row['static_ms']:.2f}x | {1000 * row['level'] / row['static_ms']:.0f} |"
        )
    (args.out / "graphs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return 0 if report["tokens"]["matched"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
