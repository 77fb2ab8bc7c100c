"""Concurrency benchmark: N streamed requests at once against the same N one after another, in one run.

    python -m scripts.bench_concurrency --weights DIR [--variants turbo,standard]
        [--turbo-levels 1,2,4,8,16] [--turbo-tokens 100] [--standard-levels 1,2,4,8] [--standard-tokens 60]
        [--multilingual-levels 1,2,4] [--multilingual-tokens 60] [--device auto|cpu|cuda]
        [--dtype auto|float32|bfloat16|float16] [--vocoder batched|sliced|both] [--threads N]
        [--serial-requests K] [--plot build/bench/concurrency.png]

Per variant, one predictor process (only that variant, MAX_CONCURRENT_REQUESTS = the highest level),
or one per vocoder mode with `--vocoder both` (BATCH_VOCODER true, then false; the serial baseline,
the same either way, is measured once).
Request i has its own seed and text; level N sends requests 0..N-1.
- serial: requests 0..max-1 each alone, one after another (after one warm-up request); the serial
  figure for level N is the sum of the first N (the same requests, one after another). With
  `--serial-requests K` only the first K run alone, and a level N > K takes N times their mean wall
  time (marked ≈ in the table): on a GPU, 64 lone requests would spend the lease on a baseline whose
  rate the first 16 already give;
- concurrent: for each level N, the N requests sent at once (generate_stream, SSE).
With `--unstreamed` every call, serial and concurrent, is a V2 infer over REST instead (bar F-1's
shape: the whole answer at once; time to first audio is then the whole call).
Columns: aggregate audio-seconds per wall-second, its ratio to serial, median and p95 time to first
audio (streamed) and median latency (to the `done` event), concurrent. Random weights rarely emit
the stop token, so every request makes its full token cap. The PNG plots throughput and TTFA
against concurrency. `scripts.bench --tables concurrency` runs this with its defaults.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from contract.variants import SAMPLE_RATE
from predictor.config import DTYPE_CHOICES
from predictor.engine.precision import cpu_flags, resolve_precision
from scripts.random_weights import write_reference_wav

from .bench_predictor import PredictorClient, PredictorProcess

VOICE = "ref.wav"
DEFAULT_LEVELS = {"turbo": "1,2,4,8,16", "standard": "1,2,4,8", "multilingual": "1,2,4"}
DEFAULT_TOKENS = {"turbo": 100, "standard": 60, "multilingual": 60}
SHOWN_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
TEXTS = [
    "Hello there, this is request number {i} of the concurrency benchmark.",
    "Request {i} reads a different sentence, so that prompts differ in length a little.",
    "Number {i} arrives together with the others and shares the model with them.",
]
VOCODER_MODES = {"batched": ("batched",), "sliced": ("sliced",), "both": ("batched", "sliced")}
STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[bench-concurrency {time.monotonic() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for variant in ("turbo", "standard", "multilingual"):
        parser.add_argument(
            f"--{variant}-levels",
            default=DEFAULT_LEVELS[variant],
            help=f"concurrency levels for {variant} (default {DEFAULT_LEVELS[variant]})",
        )
        parser.add_argument(
            f"--{variant}-tokens",
            type=int,
            default=DEFAULT_TOKENS[variant],
            help=f"speech-token cap per {variant} request (default {DEFAULT_TOKENS[variant]})",
        )
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="the predictor's DTYPE (default auto)")
    parser.add_argument(
        "--vocoder",
        choices=tuple(VOCODER_MODES),
        default="batched",
        help="BATCH_VOCODER of the concurrent runs: batched (default), sliced, or both side by side",
    )
    parser.add_argument(
        "--serial-requests",
        type=int,
        default=0,
        help="run only the first K requests alone for the serial baseline; higher levels take K's mean (default: all)",
    )
    parser.add_argument(
        "--unstreamed",
        action="store_true",
        help="V2 infer calls (the whole answer) instead of generate_stream, serial and concurrent alike",
    )
    parser.add_argument("--plot", type=Path, default=Path("build/bench/concurrency.png"), help="PNG to write")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_concurrency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, type=Path, help="folder with one sub-folder per variant")
    parser.add_argument("--variants", default="turbo,standard", help="comma-separated (default turbo,standard)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="OMP/MKL threads in the predictor")
    parser.add_argument("--seed", type=int, default=1234, help="seed of request 0 (request i: seed + i)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    return args


def levels_of(args: argparse.Namespace, variant: str) -> list[int]:
    levels = sorted({int(x) for x in getattr(args, f"{variant}_levels").split(",") if x.strip()})
    if not levels or levels[0] < 1:
        raise SystemExit(f"--{variant}-levels: give positive integers")
    return levels


def request_body(variant: str, i: int, tokens: int, seed: int) -> tuple[str, dict]:
    return TEXTS[i % len(TEXTS)].format(i=i), {"voice": VOICE, "seed": seed + i, "max_new_tokens": tokens}


def run_level(url: str, variant: str, indices: list[int], tokens: int, seed: int, unstreamed: bool = False) -> dict:
    def one(i: int) -> tuple[int, float, float]:
        """(samples, first audio s, done s) of request i."""
        text, params = request_body(variant, i, tokens, seed)
        client = PredictorClient(url)
        try:
            if unstreamed:
                whole = client.infer(variant, text, params)
                return len(whole.audio), whole.seconds, whole.seconds
            streamed = client.stream(variant, text, params)
            first, done = streamed.first_chunk_seconds, streamed.total_seconds
            assert first is not None and done is not None, f"request {i} streamed no audio"
            return len(streamed.audio), first, done
        finally:
            client.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(indices)) as pool:
        results = list(pool.map(one, indices))
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "audio_s": sum(samples for samples, _, _ in results) / SAMPLE_RATE,
        "ttfa_s": [first for _, first, _ in results],
        "latency_s": [done for _, _, done in results],
    }


def serial_figures(serial: list[dict], level: int) -> tuple[float, float]:
    """Wall and audio seconds of requests 0..level-1 one after another: measured where they ran
    alone, else `level` times the mean of those that did."""
    ran = serial[:level]
    wall, audio = sum(s["wall_s"] for s in ran), sum(s["audio_s"] for s in ran)
    return wall * level / len(ran), audio * level / len(ran)


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if len(values) > 1 else values[0]


def variant_table(args: argparse.Namespace, variant: str, weights: Path, voices: Path, device: str) -> dict:
    levels = levels_of(args, variant)
    tokens = getattr(args, f"{variant}_tokens")
    top = levels[-1]
    alone = min(top, args.serial_requests) if args.serial_requests > 0 else top
    serial: list[dict] = []
    rows = []
    for vocoder in VOCODER_MODES[args.vocoder]:
        log(
            f"{variant}: starting the predictor (DTYPE={args.dtype}, MAX_CONCURRENT_REQUESTS={top}, vocoder {vocoder}) ..."
        )
        predictor = PredictorProcess(
            weights,
            voices,
            [variant],
            device,
            args.threads,
            env_overrides={
                "MAX_CONCURRENT_REQUESTS": str(top),
                "DTYPE": args.dtype,
                "BATCH_VOCODER": str(vocoder == "batched").lower(),
            },
        )
        try:
            predictor.wait_ready()
            log(f"{variant}: warm-up")
            run_level(predictor.url, variant, [0], tokens, args.seed + 10_000, args.unstreamed)
            # A request alone runs the same way in both modes: the serial baseline is measured once.
            for i in range(len(serial), alone):
                log(f"{variant}: serial request {i + 1}/{alone}")
                serial.append(run_level(predictor.url, variant, [i], tokens, args.seed, args.unstreamed))
            for level in levels:
                log(f"{variant}: {level} concurrent (vocoder {vocoder})")
                concurrent = run_level(predictor.url, variant, list(range(level)), tokens, args.seed, args.unstreamed)
                serial_wall, serial_audio = serial_figures(serial, level)
                row = {
                    "vocoder": vocoder,
                    "level": level,
                    "audio_s": concurrent["audio_s"],
                    "serial_wall_s": serial_wall,
                    "serial_estimated": level > len(serial),
                    "wall_s": concurrent["wall_s"],
                    "throughput": concurrent["audio_s"] / concurrent["wall_s"],
                    "serial_throughput": serial_audio / serial_wall,
                    "ttfa_median_s": statistics.median(concurrent["ttfa_s"]),
                    "ttfa_p95_s": p95(concurrent["ttfa_s"]),
                    "latency_median_s": statistics.median(concurrent["latency_s"]),
                    "latency_p95_s": p95(concurrent["latency_s"]),
                }
                rows.append(row)
                log(
                    f"{variant} N={level}: {row['throughput']:.2f} audio s per wall s "
                    f"({row['throughput'] / row['serial_throughput']:.2f}x serial), TTFA median "
                    f"{row['ttfa_median_s']:.2f} s (lone {serial[0]['ttfa_s'][0]:.2f} s), wall {row['wall_s']:.1f} s"
                )
        finally:
            predictor.stop()
    return {"variant": variant, "tokens": tokens, "rows": rows, "serial_ttfa_s": serial[0]["ttfa_s"][0]}


def render(results: list[dict], unstreamed: bool = False) -> str:
    shape = "unstreamed (V2 infer; first audio = the whole call)" if unstreamed else "streamed"
    lines = [
        f"Concurrency: N {shape} requests at once vs the same N one after another (same run)",
        "",
        "| variant | cap | vocoder | N | audio s | serial wall s | concurrent wall s | audio s per wall s "
        "| ratio to serial | TTFA median / p95 s | TTFA ÷ serial TTFA | latency median / p95 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["rows"]:
            lines.append(
                f"| {result['variant']} | {result['tokens']} | {row['vocoder']} | {row['level']} | {row['audio_s']:.1f} "
                f"| {'≈' if row.get('serial_estimated') else ''}{row['serial_wall_s']:.1f} | {row['wall_s']:.1f} | {row['throughput']:.2f} "
                f"| {row['throughput'] / row['serial_throughput']:.2f}x "
                f"| {row['ttfa_median_s']:.2f} / {row['ttfa_p95_s']:.2f} "
                f"| {row['ttfa_median_s'] / result['serial_ttfa_s']:.2f}x "
                f"| {row['latency_median_s']:.1f} / {row['latency_p95_s']:.1f} |"
            )
    return "\n".join(lines)


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for result in results:
        modes = sorted({row["vocoder"] for row in result["rows"]})
        for vocoder in modes:
            rows = [row for row in result["rows"] if row["vocoder"] == vocoder]
            levels = [row["level"] for row in rows]
            name = result["variant"] if len(modes) == 1 else f"{result['variant']} ({vocoder} vocoder)"
            left.plot(levels, [row["throughput"] for row in rows], marker="o", label=f"{name} concurrent")
            right.plot(levels, [row["ttfa_median_s"] for row in rows], marker="o", label=f"{name} median")
            right.plot(levels, [row["ttfa_p95_s"] for row in rows], marker="x", linestyle=":", label=f"{name} p95")
        rows = [row for row in result["rows"] if row["vocoder"] == modes[0]]
        left.plot(
            [row["level"] for row in rows],
            [row["serial_throughput"] for row in rows],
            linestyle="--",
            label=f"{result['variant']} serial",
        )
    for axis, label in ((left, "audio seconds per wall second"), (right, "time to first audio (s)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def config_line(args: argparse.Namespace, device: str) -> str:
    flags = cpu_flags()
    shown = [flag for flag in SHOWN_CPU_FLAGS if flag in flags]
    precision = resolve_precision(args.dtype, device)
    hardware = torch.cuda.get_device_name() if device == "cuda" else f"{os.cpu_count()} CPUs"
    return (
        f"Config: device={device} ({hardware}); DTYPE={args.dtype} ({precision.describe()}); "
        f"threads={args.threads or f'torch default ({torch.get_num_threads()})'}; "
        f"CPU flags: {' '.join(shown) or 'none of ' + ','.join(SHOWN_CPU_FLAGS)}; vocoder={args.vocoder}; "
        + "; ".join(
            f"{v}: levels {','.join(map(str, levels_of(args, v)))} cap {getattr(args, f'{v}_tokens')}"
            for v in args.variants
        )
        + (f"; serial baseline from the first {args.serial_requests} requests" if args.serial_requests > 0 else "")
    )


def run(args: argparse.Namespace, weights: Path, device: str) -> str:
    """The table (markdown, with its config line), after writing the plot; `args` as add_arguments makes them."""
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-voices-") as voices:
        write_reference_wav(Path(voices) / VOICE, seconds=6.0, seed=1)
        results = [variant_table(args, variant, weights, Path(voices), device) for variant in args.variants]
    config = config_line(args, device)
    plot(results, args.plot, config.replace("; ", "\n", 2))
    return f"{config}\n\n{render(results, args.unstreamed)}\n\nPlot: {args.plot}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    print(run(args, args.weights.resolve(), device), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
