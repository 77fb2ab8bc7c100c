"""Benchmark: upstream chatterbox `generate()` and the predictor, side by side, in one run
(`make bench`). Same weights, same text, same seed, same speech-token cap.

    python -m scripts.bench --weights DIR [--variants standard,turbo] [--tokens 30] [--repeats 3]
                            [--device auto|cpu|cuda] [--text TEXT] [--seed S] [--threads N]
                            [--tables main,streaming,concurrency,precision] [--stream-tokens 200] [--stream-repeats 1] [--stream-seed 3]
                            [--stream-without-adapter]
                            [--json PATH]

Tables (one function each; `--tables` picks them):
- main (`main_table`): per variant, two scenarios.
  1. "repeated voice": upstream `generate(text, audio_prompt_path=ref)` on every call (upstream
     re-prepares the conditionals each time) vs the predictor's V2 infer with `voice=ref.wav`
     (prepared once, then served from its voice cache).
  2. "voice already held": upstream after one `prepare_conditionals(ref)`, then `generate(text)`
     (uses model.conds) vs the same predictor call.
  Latency is the median wall time of R calls after one warm-up. Time to first audio (TTFA) is the
  latency for upstream (it returns all at once) and, for the predictor, the arrival of the first
  `chunk` event of `POST /v2/models/{name}/generate_stream`. RTF = wall time / audio seconds.
  The predictor measurements are shared by both scenarios (its request is the same in both); calls
  are interleaved (upstream 1, upstream 2, ours infer, ours stream) so drift hits all alike.
- streaming (`streaming_table`): one utterance of `--stream-tokens` speech tokens with the built-in
  voice (`--stream-seed`), unstreamed and streamed, on the predictor's routes (V2 infer vs SSE
  generate_stream) and through an adapter started in front of it (WebSocket `say`, audio.stream
  false vs true): TTFA, streamed total, the stall-free start-up delay a player needs (max over
  chunks of arrival minus the chunk's start time in the audio), and TTFA and streamed total as
  ratios of the unstreamed latency.
- concurrency (scripts/bench_concurrency.py): N streamed requests at once against the same N one
  after another, per variant and level, with the batched (and with `--vocoder both` the sliced)
  vocoder; writes a PNG.
- precision (scripts/bench_precision.py): `--precision-dtype` against float32 on the real engine:
  how often the same tokens are sampled, and the audio's distance from float32 against float32's
  own run-to-run noise floor.

The upstream token cap is forced as tests/test_conformance.py does it (upstream hard-codes 1000):
`t3.inference(max_new_tokens=N)`, or for turbo `t3.inference_turbo(max_gen_len=N-1)`.
Variants run one at a time: a predictor process with only that variant (`python -m predictor`,
LOAD_<VARIANT>=true, MAX_CONCURRENT_REQUESTS=1, the reference voice in a temporary VOICES_DIR) and
one upstream model (`from_local`), both freed before the next, so peak memory is two copies of one
variant. During every timed call the CPU time of other processes is sampled from /proc; if others
competed for the CPU the output says so (timings on a shared machine are then noisy).
Progress goes to stderr, the tables (markdown) to stdout.
"""

from __future__ import annotations

import os

# Before anything imports huggingface_hub (it reads this once): never reach the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import contextlib
import functools
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract.params import defaults_for
from contract.variants import SAMPLE_RATE, VARIANT_NAMES
from predictor.engine.variants import VARIANT_SPECS
from scripts.random_weights import write_reference_wav

from . import bench_concurrency, bench_precision
from .bench_adapter import AdapterProcess
from .bench_cpu import CpuMonitor
from .bench_predictor import PredictorProcess
from .upstream import load_upstream, upstream_generate

VOICE = "ref.wav"
# One sentence each: the predictor splits text into sentences and caps tokens per piece, upstream
# caps the whole call; with a single piece both apply the same cap to the same text.
DEFAULT_TEXT = "Hello there, this is a short benchmark of the speech server with random weights."
DEFAULT_STREAM_TEXT = (
    "This longer sentence keeps the model talking for a good while, so that streamed audio "
    "can start playing long before the whole utterance has been generated and vocoded"
)
DEFAULT_STREAM_SEED = 3  # the issue's seed; the log says when a run stops before the cap (then pick another)
TABLES = ("main", "streaming", "concurrency", "precision")
CONTENTION_WARN_CORES = 0.25  # other processes busier than this during timed calls: say the numbers are noisy
STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


# ---- options ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--weights", required=True, type=Path, help="folder with one sub-folder per variant")
    parser.add_argument(
        "--variants",
        default="standard,turbo",
        help="comma-separated, of standard,turbo,multilingual (default standard,turbo)",
    )
    parser.add_argument("--tokens", type=int, default=30, help="speech-token cap per call, main table (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up (default 3)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="text for the main table (keep it one sentence)")
    parser.add_argument("--seed", type=int, default=1234, help="seed for every call, both sides (default 1234)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads here and OMP/MKL threads in the predictor (default: torch's default)",
    )
    parser.add_argument("--tables", default="main", help=f"comma-separated, of {','.join(TABLES)} (default main)")
    parser.add_argument(
        "--stream-tokens", type=int, default=200, help="speech-token cap for the streaming table (default 200)"
    )
    parser.add_argument(
        "--stream-repeats", type=int, default=1, help="timed calls per variant in the streaming table (default 1)"
    )
    parser.add_argument(
        "--stream-without-adapter",
        action="store_true",
        help="streaming table: the predictor's route only (for hosts without the adapter's codecs, e.g. a GPU box)",
    )
    parser.add_argument("--stream-text", default=DEFAULT_STREAM_TEXT, help="text for the streaming table")
    parser.add_argument(
        "--stream-seed",
        type=int,
        default=DEFAULT_STREAM_SEED,
        help=f"seed for the streaming table, one whose run reaches the cap (default {DEFAULT_STREAM_SEED})",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write all results (raw times too) here")
    bench_concurrency.add_arguments(parser)  # the concurrency table (scripts/bench_concurrency.py)
    bench_precision.add_arguments(parser)  # the precision table (scripts/bench_precision.py)
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    for name in args.variants:
        if name not in VARIANT_NAMES:
            parser.error(f"--variants: unknown variant {name!r} (known: {', '.join(VARIANT_NAMES)})")
    for name in args.tables:
        if name not in TABLES:
            parser.error(f"--tables: unknown table {name!r} (known: {', '.join(TABLES)})")
    if not args.variants or not args.tables:
        parser.error("nothing to do: give at least one variant and one table")
    if args.tokens < 1 or args.stream_tokens < 1 or args.repeats < 1 or args.stream_repeats < 1:
        parser.error("--tokens, --stream-tokens, --repeats and --stream-repeats must be at least 1")
    if not args.weights.is_dir():
        parser.error(
            f"--weights: {args.weights} is not a folder (build one with `python -m scripts.random_weights --out DIR`)"
        )
    return args


def resolve_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    return choice


# ---- upstream: scripts/upstream.py ----------------------------------------------------------
def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def upstream_extra(variant: str) -> dict:
    # Explicit values on both sides: the predictor's defaults are the seed's, upstream's differ.
    return defaults_for(variant)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device: str, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    started = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - started, result


# ---- shared state ----------------------------------------------------------------------------
@dataclass
class Context:
    args: argparse.Namespace
    device: str
    voice_path: Path
    voices_dir: Path
    predictor: PredictorProcess | None = None  # the one for the variant being measured
    predictor_ready_s: dict = field(default_factory=dict)  # variant -> seconds from launch to ready
    warmed: set = field(default_factory=set)  # variants the predictor has already served
    other_cores: dict = field(default_factory=dict)  # "table/variant" -> cores other processes used, per timed call

    def measured(self, key: str, fn: Callable[[], Any], extra_pids: tuple[int, ...] = ()) -> Any:
        """Run one timed call, noting how busy the rest of the machine was meanwhile."""
        assert self.predictor is not None, "set before each variant is measured"
        with CpuMonitor([os.getpid(), self.predictor.popen.pid, *extra_pids]).window() as window:
            value = fn()
        if window.other_cores is not None:
            self.other_cores.setdefault(key, []).append(window.other_cores)
            if window.other_cores > CONTENTION_WARN_CORES:
                log(f"  (other processes kept {window.other_cores:.2f} cores busy during this call: noisy)")
        return value

    def contention(self, key: str) -> dict:
        values = self.other_cores.get(key) or []
        if not values:
            return {"other_cores_mean": None, "other_cores_max": None}
        return {
            "other_cores_mean": sum(values) / len(values),
            "other_cores_max": max(values),
            "other_cores_per_call": values,
        }

    def ready(self, variant: str) -> PredictorProcess:
        assert self.predictor is not None, "set before each variant is measured"
        if variant not in self.predictor_ready_s:
            log(f"{variant}: waiting for the predictor to be ready ...")
            self.predictor_ready_s[variant] = self.predictor.wait_ready()
            log(
                f"{variant}: predictor ready after {self.predictor_ready_s[variant]:.1f} s (info: {self.predictor.info()})"
            )
        return self.predictor

    def ours_params(self, variant: str, tokens: int) -> dict:
        params = {"voice": VOICE, "seed": self.args.seed, "max_new_tokens": tokens}
        params.update(upstream_extra(variant))
        return params


def median(values: list[float]) -> float:
    return statistics.median(values)


def seconds(audio: np.ndarray) -> float:
    return len(audio) / SAMPLE_RATE


def compare(reference: np.ndarray, other: np.ndarray) -> str:
    if reference.shape != other.shape:
        return f"DIFFERENT LENGTH ({len(reference)} vs {len(other)} samples)"
    if np.array_equal(reference, other):
        return "identical"
    return f"same length, samples differ (max |diff| {float(np.max(np.abs(reference - other))):.2e})"


def summarize_checks(checks: list[str]) -> str:
    distinct = sorted(set(checks))
    return distinct[0] if len(distinct) == 1 else "; ".join(distinct)


def contention_note(result: dict) -> str:
    mean, peak = result.get("other_cores_mean"), result.get("other_cores_max")
    if mean is None or peak is None:  # contention() sets both or neither
        return "CPU use of other processes: unknown"
    flag = " (NOISY: other work competed for the CPU)" if peak > CONTENTION_WARN_CORES else ""
    return f"other processes used {mean:.2f} cores on average (max {peak:.2f}) during the timed calls{flag}"


# ---- table: main -----------------------------------------------------------------------------
def main_table(ctx: Context, variant: str, model, load_s: float) -> dict:
    """Both scenarios for one variant; returns the raw measurements and the two table rows."""
    args, device = ctx.args, ctx.device
    text, cap, voice = args.text, args.tokens, str(ctx.voice_path)
    extra = upstream_extra(variant)

    def up_repeated() -> np.ndarray:
        torch.manual_seed(args.seed)
        return upstream_generate(model, variant, text, cap, audio_prompt_path=voice, **extra)

    def up_held() -> np.ndarray:
        model.conds = held_conds
        torch.manual_seed(args.seed)
        return upstream_generate(model, variant, text, cap, **extra)

    predictor = ctx.ready(variant)
    params = ctx.ours_params(variant, cap)

    log(f"{variant}: warm-up (upstream with audio_prompt_path, predictor infer + stream)")
    warm_up_s, _ = timed(device, up_repeated)
    warm_ours = predictor.infer(variant, text, params)
    predictor.stream(variant, text, params)
    ctx.warmed.add(variant)
    log(
        f"{variant}: warm-up done (upstream {warm_up_s:.2f} s, predictor {warm_ours.seconds:.2f} s incl. voice preparation)"
    )

    prepare_s, _ = timed(device, lambda: model.prepare_conditionals(voice))
    held_conds = model.conds
    log(f"{variant}: upstream prepare_conditionals once: {prepare_s:.2f} s")

    raw: dict[str, list[float]] = {
        "upstream_repeated": [],
        "upstream_held": [],
        "ours_infer": [],
        "ours_stream_ttfa": [],
        "ours_stream_total": [],
    }
    audio_s: dict[str, list[float]] = {
        "upstream_repeated": [],
        "upstream_held": [],
        "ours_infer": [],
        "ours_stream": [],
    }
    checks: dict[str, list[str]] = {
        "ours_vs_upstream_repeated": [],
        "ours_vs_upstream_held": [],
        "upstream_held_vs_repeated": [],
        "stream_vs_infer_length": [],
    }
    key = f"main/{variant}"
    for r in range(args.repeats):
        t1, a1 = ctx.measured(key, lambda: timed(device, up_repeated))
        log(
            f"{variant} [{r + 1}/{args.repeats}] upstream, audio_prompt_path every call: {t1:.2f} s ({seconds(a1):.2f} s audio)"
        )
        t2, a2 = ctx.measured(key, lambda: timed(device, up_held))
        log(f"{variant} [{r + 1}/{args.repeats}] upstream, voice held: {t2:.2f} s ({seconds(a2):.2f} s audio)")
        ours = ctx.measured(key, lambda: predictor.infer(variant, text, params))
        log(
            f"{variant} [{r + 1}/{args.repeats}] predictor V2 infer: {ours.seconds:.2f} s ({seconds(ours.audio):.2f} s audio, "
            f"{ours.speech_tokens} tokens)"
        )
        stream = ctx.measured(key, lambda: predictor.stream(variant, text, params))
        log(
            f"{variant} [{r + 1}/{args.repeats}] predictor stream: first chunk {stream.first_chunk_seconds:.2f} s, "
            f"done {stream.total_seconds:.2f} s ({len(stream.chunk_times)} chunks, {seconds(stream.audio):.2f} s audio)"
        )
        raw["upstream_repeated"].append(t1)
        raw["upstream_held"].append(t2)
        raw["ours_infer"].append(ours.seconds)
        raw["ours_stream_ttfa"].append(stream.first_chunk_seconds)
        raw["ours_stream_total"].append(stream.total_seconds)
        audio_s["upstream_repeated"].append(seconds(a1))
        audio_s["upstream_held"].append(seconds(a2))
        audio_s["ours_infer"].append(seconds(ours.audio))
        audio_s["ours_stream"].append(seconds(stream.audio))
        checks["ours_vs_upstream_repeated"].append(compare(a1, ours.audio))
        checks["ours_vs_upstream_held"].append(compare(a2, ours.audio))
        checks["upstream_held_vs_repeated"].append(compare(a1, a2))
        checks["stream_vs_infer_length"].append(
            "same length"
            if len(stream.audio) == len(ours.audio)
            else f"DIFFERENT LENGTH ({len(stream.audio)} vs {len(ours.audio)} samples)"
        )

    ours_lat = median(raw["ours_infer"])
    ours_ttfa = median(raw["ours_stream_ttfa"])
    ours_audio = median(audio_s["ours_infer"])
    rows = []
    for scenario, upstream_key, check in (
        ("1. repeated voice", "upstream_repeated", "ours_vs_upstream_repeated"),
        ("2. voice already held", "upstream_held", "ours_vs_upstream_held"),
    ):
        up_lat = median(raw[upstream_key])
        up_audio = median(audio_s[upstream_key])
        rows.append(
            {
                "variant": variant,
                "scenario": scenario,
                "upstream_latency_s": up_lat,
                "ours_latency_s": ours_lat,
                "latency_ratio": ours_lat / up_lat,
                "upstream_ttfa_s": up_lat,
                "ours_ttfa_s": ours_ttfa,
                "ttfa_ratio": ours_ttfa / up_lat,
                "upstream_rtf": up_lat / up_audio if up_audio else float("nan"),
                "ours_rtf": ours_lat / ours_audio if ours_audio else float("nan"),
                "upstream_audio_s": up_audio,
                "ours_audio_s": ours_audio,
                "same_audio": summarize_checks(checks[check]),
            }
        )
    return {
        "variant": variant,
        "rows": rows,
        "raw_seconds": raw,
        "audio_seconds": audio_s,
        "checks": {k: summarize_checks(v) for k, v in checks.items()},
        "upstream_load_s": load_s,
        "upstream_warm_up_s": warm_up_s,
        "upstream_prepare_conditionals_s": prepare_s,
        "ours_first_call_s": warm_ours.seconds,
        "ours_speech_tokens": warm_ours.speech_tokens,
        **ctx.contention(key),
    }


def render_main(results: list[dict]) -> str:
    lines = [
        "| variant | scenario | upstream latency s | ours latency s (V2 infer) | ratio ours/upstream | "
        "upstream TTFA s | ours TTFA s (stream) | TTFA ratio | upstream RTF | ours RTF | audio s (up / ours) | same audio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for result in results:
        for row in result["rows"]:
            lines.append(
                f"| {row['variant']} | {row['scenario']} | {row['upstream_latency_s']:.2f} | {row['ours_latency_s']:.2f} | "
                f"**{row['latency_ratio']:.2f}** | {row['upstream_ttfa_s']:.2f} | {row['ours_ttfa_s']:.2f} | "
                f"{row['ttfa_ratio']:.2f} | {row['upstream_rtf']:.2f} | {row['ours_rtf']:.2f} | "
                f"{row['upstream_audio_s']:.2f} / {row['ours_audio_s']:.2f} | {row['same_audio']} |"
            )
    notes = []
    for result in results:
        raw = result["raw_seconds"]
        notes.append(
            f"- {result['variant']}: upstream load {result['upstream_load_s']:.1f} s, "
            f"prepare_conditionals {result['upstream_prepare_conditionals_s']:.2f} s; "
            f"predictor first call (prepares and caches the voice) {result['ours_first_call_s']:.2f} s; "
            f"stream done after {median(raw['ours_stream_total']):.2f} s (median); "
            f"stream vs infer audio: {result['checks']['stream_vs_infer_length']}; "
            f"upstream held vs repeated: {result['checks']['upstream_held_vs_repeated']}; "
            f"speech tokens (predictor): {result['ours_speech_tokens']}; {contention_note(result)}"
        )
    return "\n".join(
        [
            "### Upstream generate() vs predictor",
            "",
            *lines,
            "",
            "Latency/TTFA: median wall time per call; ratio < 1 means the predictor is faster. "
            "The predictor columns are one set of calls, shared by both scenarios.",
            *notes,
        ]
    )


# ---- table: streaming ------------------------------------------------------------------------
def streaming_table(ctx: Context, variant: str) -> dict:
    """One utterance of `--stream-tokens` speech tokens with the built-in voice, unstreamed and
    streamed, on two routes: the predictor's own (V2 infer vs SSE generate_stream) and the adapter's
    WebSocket (`say` with audio.stream false vs true; the adapter runs in front of the same predictor)."""
    args = ctx.args
    predictor = ctx.ready(variant)
    params = {"seed": args.stream_seed, "max_new_tokens": args.stream_tokens}
    voice = dict(params)  # the WebSocket's `voice` object carries the same sampling parameters
    adapter = None if args.stream_without_adapter else AdapterProcess(predictor.url, ctx.voices_dir)
    try:
        log(f"{variant}: streaming warm-up (short infer and stream{', WebSocket say' if adapter else ''})")
        short = {**params, "max_new_tokens": min(10, args.stream_tokens)}
        predictor.infer(variant, args.stream_text, short)
        predictor.stream(variant, args.stream_text, short)
        routes: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "predictor (SSE)": (
                lambda: predictor.infer(variant, args.stream_text, params),
                lambda: predictor.stream(variant, args.stream_text, params),
            )
        }
        if adapter is not None:
            adapter.wait_ready()
            adapter.say(variant, args.stream_text, {**voice, "max_new_tokens": short["max_new_tokens"]}, stream=True)
            routes["adapter (WebSocket)"] = (
                lambda: adapter.say(variant, args.stream_text, voice, stream=False),
                lambda: adapter.say(variant, args.stream_text, voice, stream=True),
            )
        key = f"streaming/{variant}"
        extra_pids = (adapter.popen.pid,) if adapter is not None else ()  # also sampled for CPU contention
        rows = []
        for route, (unstreamed_call, streamed_call) in routes.items():
            runs = []
            for r in range(args.stream_repeats):
                unstreamed = ctx.measured(key, unstreamed_call, extra_pids=extra_pids)
                streamed = ctx.measured(key, streamed_call, extra_pids=extra_pids)
                unstreamed_s = unstreamed.seconds if hasattr(unstreamed, "seconds") else unstreamed.total_seconds
                log(
                    f"{variant} [{r + 1}/{args.stream_repeats}] {route}: unstreamed {unstreamed_s:.2f} s; streamed: "
                    f"first audio {streamed.first_chunk_seconds:.2f} s, done {streamed.total_seconds:.2f} s, "
                    f"stall-free start {streamed.startup_delay_seconds:.2f} s ({len(streamed.chunk_times)} chunks, "
                    f"{seconds(streamed.audio):.2f} s audio)"
                )
                runs.append((unstreamed_s, unstreamed, streamed))
            rows.append(streaming_row(variant, route, runs, args.stream_tokens))
    finally:
        if adapter is not None:
            adapter.stop()
    return {"variant": variant, "rows": rows, **ctx.contention(key)}


def streaming_row(variant: str, route: str, runs: list, stream_tokens: int) -> dict:
    unstreamed_s = median([u for u, _, _ in runs])
    ttfa = median([s.first_chunk_seconds for _, _, s in runs])
    total = median([s.total_seconds for _, _, s in runs])
    startup = median([s.startup_delay_seconds for _, _, s in runs])
    _, unstreamed, streamed = runs[-1]
    tokens = getattr(unstreamed, "speech_tokens", None)
    if tokens is not None and tokens < stream_tokens:
        log(f"{variant}: note: the model stopped after {tokens} of {stream_tokens} speech tokens (try --stream-seed)")
    return {
        "variant": variant,
        "route": route,
        "speech_tokens": tokens,
        "audio_s": seconds(unstreamed.audio),
        "unstreamed_s": unstreamed_s,
        "ttfa_s": ttfa,
        "stream_total_s": total,
        "startup_delay_s": startup,
        "ttfa_over_unstreamed": ttfa / unstreamed_s,
        "total_over_unstreamed": total / unstreamed_s,
        "first_chunk_audio_ms": 1000 * streamed.chunk_samples[0] / SAMPLE_RATE,
        "chunks": len(streamed.chunk_times),
        "same_length": "same length"
        if len(streamed.audio) == len(unstreamed.audio)
        else f"DIFFERENT LENGTH ({len(streamed.audio)} vs {len(unstreamed.audio)} samples)",
        "raw": {
            "unstreamed_s": [u for u, _, _ in runs],
            "ttfa_s": [s.first_chunk_seconds for _, _, s in runs],
            "stream_total_s": [s.total_seconds for _, _, s in runs],
            "startup_delay_s": [s.startup_delay_seconds for _, _, s in runs],
            "chunk_times_s": streamed.chunk_times,
            "chunk_samples": streamed.chunk_samples,
        },
    }


def render_streaming(results: list[dict], stream_tokens: int) -> str:
    lines = [
        "| variant | route | speech tokens | audio s | unstreamed s | TTFA s | streamed total s | stall-free start s | "
        "TTFA / unstreamed | total / unstreamed | first chunk ms | chunks | stream vs unstreamed audio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        for row in result["rows"]:
            tokens = "?" if row["speech_tokens"] is None else row["speech_tokens"]
            lines.append(
                f"| {row['variant']} | {row['route']} | {tokens} | {row['audio_s']:.2f} | {row['unstreamed_s']:.2f} | "
                f"{row['ttfa_s']:.2f} | {row['stream_total_s']:.2f} | {row['startup_delay_s']:.2f} | "
                f"**{row['ttfa_over_unstreamed']:.3f}** | **{row['total_over_unstreamed']:.2f}** | "
                f"{row['first_chunk_audio_ms']:.0f} | {row['chunks']} | {row['same_length']} |"
            )
    notes = [f"- {result['variant']}: {contention_note(result)}" for result in results]
    return "\n".join(
        [
            f"### Streaming vs unstreamed (built-in voice, cap {stream_tokens} speech tokens)",
            "",
            *lines,
            "",
            "Unstreamed: the whole call (V2 infer; WebSocket `say` with audio.stream false). TTFA: first audio "
            "of the streamed call. Stall-free start: the least delay from sending to starting playback at which "
            "a player never runs dry, max over chunks of (arrival - the chunk's start time in the audio); "
            "WebSocket chunks are the adapter's 40 ms messages.",
            *notes,
        ]
    )


# ---- run -------------------------------------------------------------------------------------
def config_line(args: argparse.Namespace, device: str) -> str:
    from importlib.metadata import version

    threads = torch.get_num_threads()
    predictor_threads = args.threads if args.threads else "torch default"
    parts = [
        f"device={device}"
        + (
            f" ({torch.cuda.get_device_name()})"
            if device == "cuda"
            else f" ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)"
        ),
        f"torch={torch.__version__} threads={threads} (predictor: {predictor_threads})",
        f"chatterbox-tts={version('chatterbox-tts')}",
        f"variants={','.join(args.variants)}",
        f"tables={','.join(args.tables)}",
        f"seed={args.seed}",
        f"predictor DTYPE={args.dtype}",
    ]
    if "main" in args.tables:
        parts += [f"tokens={args.tokens}", f"repeats={args.repeats} (+1 warm-up)", f"text={args.text!r}"]
    if "streaming" in args.tables:
        parts += [
            f"stream_tokens={args.stream_tokens}",
            f"stream_repeats={args.stream_repeats}",
            f"stream_seed={args.stream_seed}",
            f"stream_text={args.stream_text!r}",
        ]
    return "Config: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    weights = args.weights.resolve()
    results: dict[str, Any] = {"main": [], "streaming": []}
    # Upstream prints progress of its own ("S3 Token -> Mel Inference...", ...): keep stdout for the tables.
    with tempfile.TemporaryDirectory(prefix="bench-voices-") as voices, contextlib.redirect_stdout(sys.stderr):
        voice_path = write_reference_wav(Path(voices) / VOICE, seconds=6.0, seed=1)
        ctx = Context(args=args, device=device, voice_path=voice_path, voices_dir=Path(voices))
        # One variant at a time, on both sides: a predictor with only that variant (it starts while
        # upstream loads) and one upstream model, both freed before the next variant, so that peak
        # memory is two copies of one variant.
        for variant in args.variants if {"main", "streaming"} & set(args.tables) else []:
            log(f"{variant}: starting the predictor (LOAD_{variant.upper()} only, on {device}) ...")
            ctx.predictor = PredictorProcess(
                weights, Path(voices), [variant], device, args.threads, env_overrides={"DTYPE": args.dtype}
            )
            try:
                if "main" in args.tables:
                    log(f"{variant}: loading upstream {VARIANT_SPECS[variant].class_name}.from_local ...")
                    load_s, model = timed(device, functools.partial(load_upstream, variant, weights, device))
                    log(f"{variant}: upstream loaded in {load_s:.1f} s")
                    try:
                        results["main"].append(main_table(ctx, variant, model, load_s))
                    finally:
                        del model
                        free_memory()
                if "streaming" in args.tables:
                    results["streaming"].append(streaming_table(ctx, variant))
            finally:
                ctx.predictor.stop()
                ctx.predictor = None
    config = config_line(args, device)
    if ctx.predictor_ready_s:
        config += "; predictor ready after " + ", ".join(f"{v} {s:.1f} s" for v, s in ctx.predictor_ready_s.items())
    noisy = [key for key, values in ctx.other_cores.items() if values and max(values) > CONTENTION_WARN_CORES]
    if noisy:
        config += (
            f"\nWARNING: other processes competed for the CPU during {', '.join(noisy)} "
            f"(over {CONTENTION_WARN_CORES} cores busy outside the benchmark): those timings are noisy"
        )
    out = [config, ""]
    if results["main"]:
        out += [render_main(results["main"]), ""]
    if results["streaming"]:
        out += [render_streaming(results["streaming"], args.stream_tokens), ""]
    if "concurrency" in args.tables:
        with contextlib.redirect_stdout(sys.stderr):
            out += [bench_concurrency.run(args, weights, device), ""]
    if "precision" in args.tables:
        with contextlib.redirect_stdout(sys.stderr):
            out += [bench_precision.run(args, str(weights), device), ""]
    print("\n".join(out), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": config, **results}, indent=2, default=str))
        log(f"results written to {args.json}")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
