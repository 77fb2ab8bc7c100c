"""Profile the engine in-process (scripts/device_check.sh, on a GPU or the CPU): a lone streamed request,
then one steady scheduler tick of a full T3 batch, each as a torch profiler trace (chrome trace JSON,
gzipped), with the CUDA kernels launched per tick counted.

    python -m scripts.device_profile --weights DIR --out DIR [--variants turbo,standard] [--device cuda]
        [--lone-tokens 40] [--batch 32] [--batch-tokens 64] [--steady-ticks 3]

Per variant it writes OUT/traces/<variant>-lone.json.gz and OUT/traces/<variant>-tick<B>.json.gz, and
appends a JSON line per measurement to OUT/profile.jsonl:
- lone: wall time, time to the first chunk, ticks;
- tick: the tick's wall time, and inside it the T3 step's: kernel launches from the host (cudaLaunchKernel
  and its kin: each is a kernel outside a captured CUDA graph), CUDA graph launches, kernels the GPU ran,
  host reads (aten::_local_scalar_dense: each drains the queue) and aten ops (all, and outermost). On the CPU the kernel
  counts are 0 and the aten ops are the figure to watch (each would be at least one kernel on a GPU).

The batch's requests are unstreamed, so the profiled tick is the T3 step and the tasks' slices only (no
vocoder work); `--steady-ticks` ticks run after the last request joined before the one profiled.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import contextlib
import gc
import gzip
import json
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from predictor.config import PredictorSettings
from predictor.engine.engine import ChatterboxEngine
from predictor.engine.scheduler import END, Scheduler

TEXTS = [
    "Hello there, this is request number {i} of the profile.",
    "Request {i} reads a different sentence, so that prompts differ in length a little.",
    "Number {i} arrives together with the others and shares the model with them.",
]
LAUNCH = re.compile(r"^(cuda|cu)(LaunchKernel|LaunchKernelEx|LaunchKernelExC|LaunchCooperativeKernel)(_v\d+)?$")
GRAPH_LAUNCH = re.compile(r"^(cuda|cu)GraphLaunch")
T3_STEP = "t3_step"
STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[device-profile {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Run:
    """Requests driven through the real Scheduler on this thread, as predictor/torch_thread.py does."""

    def __init__(self, engine: ChatterboxEngine, variant: str):
        self.engine, self.variant = engine, variant
        self.scheduler = Scheduler(engine)
        self.cancelled = False

    def start(self, i: int, tokens: int, stream: bool, on_item=None) -> None:
        params = {"seed": 1000 + i, "max_new_tokens": tokens}
        request = self.engine.prepare(self.variant, TEXTS[i % len(TEXTS)].format(i=i), params)
        self.scheduler.start(request, stream, lambda: self.cancelled, on_item or (lambda item: None), lambda: None)

    def tick(self) -> bool:
        with torch.inference_mode():
            return self.scheduler.tick()

    def drain(self) -> None:
        while self.tick():
            pass


def label_t3_step(engine: ChatterboxEngine, variant: str) -> None:
    """Wrap the variant's T3 step in a profiler range (on the instance: the engine's code is untouched)."""
    batch = engine.variants[variant].batch
    step = batch.step

    def labelled(*args, **kwargs):
        with record_function(T3_STEP):
            return step(*args, **kwargs)

    batch.step = labelled  # type: ignore[method-assign]


def activities(device: str) -> list[ProfilerActivity]:
    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])


def save_trace(prof, path: Path) -> int:
    """Chrome trace JSON, gzipped (chrome://tracing and Perfetto open .json.gz); returns its size."""
    raw = path.with_suffix("")  # x.json.gz -> x.json
    prof.export_chrome_trace(str(raw))
    with open(raw, "rb") as source, gzip.open(path, "wb", compresslevel=6) as sink:
        shutil.copyfileobj(source, sink)
    raw.unlink()
    return path.stat().st_size


def count_events(prof) -> dict:
    """Counts over the profile (one tick), and over the T3 step's range within it."""
    events = list(prof.events())
    steps = [e for e in events if e.name == T3_STEP and e.device_type.name == "CPU"]
    ranges = [(e.time_range.start, e.time_range.end) for e in steps]

    def in_step(event) -> bool:
        start = event.time_range.start
        return any(lo <= start <= hi for lo, hi in ranges)

    def counts(selected) -> dict:
        cpu = [e for e in selected if e.device_type.name == "CPU"]
        return {
            "kernel_launches": sum(1 for e in cpu if LAUNCH.match(e.name)),
            "graph_launches": sum(1 for e in cpu if GRAPH_LAUNCH.match(e.name)),
            "host_reads": sum(1 for e in cpu if e.name == "aten::_local_scalar_dense"),
            "aten_ops": sum(1 for e in cpu if e.name.startswith("aten::")),
            "aten_ops_outermost": sum(
                1
                for e in cpu
                if e.name.startswith("aten::") and not (e.cpu_parent and e.cpu_parent.name.startswith("aten::"))
            ),
            "memcpy_calls": sum(1 for e in cpu if e.name.startswith(("cudaMemcpy", "cuMemcpy"))),
        }

    tick = counts(events)
    tick["gpu_kernels"] = sum(
        1 for e in events if e.device_type.name == "CUDA" and not e.name.lower().startswith(("memcpy", "memset"))
    )
    step = counts([e for e in events if in_step(e)])
    return {"tick": tick, "t3_step": step, "t3_steps_in_tick": len(steps)}


def profile_lone(engine: ChatterboxEngine, variant: str, device: str, tokens: int, traces: Path) -> dict:
    run = Run(engine, variant)
    first: list[float] = []
    chunks: list[object] = []
    errors: list[BaseException] = []

    def on_item(item) -> None:
        if isinstance(item, BaseException):
            errors.append(item)
        elif item is not END:
            sync(device)
            if not first:
                first.append(time.perf_counter())
            chunks.append(item)

    ticks = 0
    with profile(activities=activities(device), record_shapes=False) as prof:
        sync(device)
        started = time.perf_counter()
        run.start(0, tokens, True, on_item)
        while run.tick():
            ticks += 1
        sync(device)
        wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    size = save_trace(prof, traces / f"{variant}-lone.json.gz")
    result = {
        "kind": "lone",
        "variant": variant,
        "tokens": tokens,
        "wall_s": wall,
        "ttfa_s": (first[0] - started) if first else None,
        "chunks": len(chunks),
        "ticks": ticks,
        "trace": f"traces/{variant}-lone.json.gz",
        "trace_bytes": size,
    }
    log(f"{variant}: lone request profiled: {wall:.2f} s, first audio {result['ttfa_s']}, {ticks} ticks")
    return result


def profile_tick(
    engine: ChatterboxEngine, variant: str, device: str, batch: int, tokens: int, steady: int, traces: Path
) -> dict:
    loaded = engine.variants[variant]
    run = Run(engine, variant)
    for i in range(batch):
        run.start(i, tokens, False)
    ticks = 0
    settled = -1
    while True:
        if not run.tick():
            raise RuntimeError(f"the batch finished before it was steady ({ticks} ticks); raise --batch-tokens")
        ticks += 1
        if len(loaded.batch) == batch and settled < 0:
            settled = ticks
        if settled >= 0 and ticks - settled >= steady:
            break
        if ticks > 10 * batch + tokens:
            raise RuntimeError(f"only {len(loaded.batch)} of {batch} requests joined the T3 batch in {ticks} ticks")
    sync(device)
    with profile(activities=activities(device), record_shapes=True) as prof:
        started = time.perf_counter()
        still = run.tick()
        sync(device)
        wall = time.perf_counter() - started
    rows = len(loaded.batch)
    run.cancelled = True  # the rest is not needed: the requests leave at their next switch point
    if still:
        run.drain()
    size = save_trace(prof, traces / f"{variant}-tick{batch}.json.gz")
    counted = count_events(prof)
    result = {
        "kind": "tick",
        "variant": variant,
        "batch": batch,
        "rows_in_t3_batch": rows,
        "tick_index": ticks + 1,
        "wall_s": wall,
        **counted,
        "trace": f"traces/{variant}-tick{batch}.json.gz",
        "trace_bytes": size,
    }
    log(
        f"{variant}: tick of {rows} rows profiled: {wall * 1000:.1f} ms, T3 step: "
        f"{counted['t3_step']['kernel_launches']} kernel launches, {counted['t3_step']['aten_ops']} aten ops, "
        f"{counted['t3_step']['host_reads']} host reads"
    )
    return result


def warm_up(engine: ChatterboxEngine, variant: str, batch: int, tokens: int) -> None:
    """A lone streamed request, then a full batch for a few ticks: kernels chosen, modules loaded."""
    run = Run(engine, variant)
    run.start(0, tokens, True)
    run.drain()
    run = Run(engine, variant)
    for i in range(batch):
        run.start(i, tokens, False)
    for _ in range(batch + 3):
        if not run.tick():
            break
    run.cancelled = True
    run.drain()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.device_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--variants", default="turbo,standard")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--lone-tokens", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batch-tokens", type=int, default=64)
    parser.add_argument("--steady-ticks", type=int, default=3)
    args = parser.parse_args(argv)
    traces = args.out / "traces"
    traces.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "profile.jsonl"
    failed = False
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        log(f"{variant}: loading on {args.device} (DTYPE={args.dtype}) ...")
        settings = PredictorSettings.model_validate(
            {
                "model_dir": str(args.weights),
                "device": args.device,
                "dtype": args.dtype,
                "load_standard": variant == "standard",
                "load_turbo": variant == "turbo",
                "load_multilingual": variant == "multilingual",
                "max_new_tokens": max(args.lone_tokens, args.batch_tokens),
            }
        )
        engine = ChatterboxEngine(settings)
        try:
            started = time.monotonic()
            engine.load()
            log(f"{variant}: loaded in {time.monotonic() - started:.1f} s; warming up")
            label_t3_step(engine, variant)
            warm_up(engine, variant, args.batch, min(args.batch_tokens, 20))
            lone = profile_lone(engine, variant, args.device, args.lone_tokens, traces)
            with open(results_path, "a") as handle:
                handle.write(json.dumps(lone) + "\n")
            tick = profile_tick(engine, variant, args.device, args.batch, args.batch_tokens, args.steady_ticks, traces)
            with open(results_path, "a") as handle:
                handle.write(json.dumps(tick) + "\n")
        except Exception as exc:  # the next variant still runs
            failed = True
            log(f"{variant}: FAILED: {exc!r}")
            with open(results_path, "a") as handle:
                handle.write(json.dumps({"kind": "error", "variant": variant, "error": repr(exc)}) + "\n")
        finally:
            engine.variants.clear()
            gc.collect()
            with contextlib.suppress(Exception):
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
