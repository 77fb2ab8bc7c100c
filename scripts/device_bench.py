"""The device check's bench (scripts/device_check.sh): one predictor process per variant, driven over
HTTP as scripts/bench_concurrency.py drives it, each result appended to a JSON-lines file as soon as it
is measured, so that a phase cut short by its time budget keeps what it finished.

    python -m scripts.device_bench --weights DIR --variant turbo --out FILE.jsonl [--device cuda]
        [--levels 1,8,32,64] [--tokens 200] [--lone 10] [--stream-tokens 200] [--stream-repeats 1]
        [--warmup-tokens 20]

In order (each line's "kind"):
1. ready: the predictor's start-up time;
2. warm-up (not recorded): a lone request and one of the top level at `--warmup-tokens`, so kernels are
   chosen and modules loaded before anything is timed;
3. lone: `--lone` streamed requests one after another (request i: its own seed and text), each with its
   time to first audio and wall time (the targets: median TTFA, and max/min of the walls), and the serial
   baseline of the concurrency rows;
4. streaming: `--stream-repeats` pairs of one utterance of `--stream-tokens` (built-in voice), V2 infer
   (unstreamed) then SSE generate_stream, as the bench's streaming table without the adapter;
5. level: for each N of `--levels`, ascending, N streamed requests at once ("level_started" is written
   first, so a level cut short shows how far it got).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from contract.variants import SAMPLE_RATE
from scripts.random_weights import write_reference_wav

from .bench_concurrency import VOICE, run_level
from .bench_predictor import PredictorProcess

STREAM_TEXT = (
    "This longer sentence keeps the model talking for a good while, so that streamed audio "
    "can start playing long before the whole utterance has been generated and vocoded"
)
STREAM_SEED = 3
STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[device-bench {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.device_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, type=Path)
    parser.add_argument("--variant", required=True, choices=("turbo", "standard", "multilingual"))
    parser.add_argument("--out", required=True, type=Path, help="JSON-lines file to append to")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--tokens", type=int, default=200, help="speech-token cap per request, lone and levels")
    parser.add_argument("--lone", type=int, default=10, help="lone requests, one after another")
    parser.add_argument("--stream-tokens", type=int, default=200)
    parser.add_argument("--stream-repeats", type=int, default=1, help="0 skips the streaming rows")
    parser.add_argument("--warmup-tokens", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    # The phase's `timeout` sends SIGTERM: leave through the finally blocks, so the predictor is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
    top = max(levels + [1])
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def record(kind: str, **fields) -> None:
        line = {"kind": kind, "variant": args.variant, "t_s": round(time.monotonic() - STARTED, 2), **fields}
        with open(args.out, "a") as handle:
            handle.write(json.dumps(line) + "\n")

    with tempfile.TemporaryDirectory(prefix="device-bench-voices-") as voices:
        write_reference_wav(Path(voices) / VOICE, seconds=6.0, seed=1)
        log(f"{args.variant}: starting the predictor on {args.device} (MAX_CONCURRENT_REQUESTS={top}) ...")
        predictor = PredictorProcess(
            args.weights,
            Path(voices),
            [args.variant],
            args.device,
            None,
            env_overrides={"MAX_CONCURRENT_REQUESTS": str(top), "DTYPE": args.dtype},
        )
        try:
            ready_s = predictor.wait_ready()
            record("ready", ready_s=ready_s, tokens=args.tokens, levels=levels, device=args.device)
            log(f"{args.variant}: ready after {ready_s:.1f} s; warm-up (1, then {top} at once)")
            started = time.monotonic()
            run_level(predictor.url, args.variant, [0], args.warmup_tokens, args.seed + 10_000)
            run_level(predictor.url, args.variant, list(range(top)), args.warmup_tokens, args.seed + 20_000)
            record("warmup", wall_s=time.monotonic() - started)

            for i in range(args.lone):
                lone = run_level(predictor.url, args.variant, [i], args.tokens, args.seed)
                record("lone", index=i, wall_s=lone["wall_s"], ttfa_s=lone["ttfa_s"][0], audio_s=lone["audio_s"])
                log(
                    f"{args.variant}: lone {i + 1}/{args.lone}: TTFA {lone['ttfa_s'][0]:.3f} s, wall {lone['wall_s']:.2f} s"
                )

            params = {"seed": STREAM_SEED, "max_new_tokens": args.stream_tokens}
            for r in range(args.stream_repeats):
                unstreamed = predictor.infer(args.variant, STREAM_TEXT, params)
                streamed = predictor.stream(args.variant, STREAM_TEXT, params)
                record(
                    "streaming",
                    repeat=r,
                    stream_tokens=args.stream_tokens,
                    speech_tokens=unstreamed.speech_tokens,
                    audio_s=len(unstreamed.audio) / SAMPLE_RATE,
                    unstreamed_s=unstreamed.seconds,
                    ttfa_s=streamed.first_chunk_seconds,
                    stream_total_s=streamed.total_seconds,
                    startup_delay_s=streamed.startup_delay_seconds,
                    first_chunk_ms=1000 * streamed.chunk_samples[0] / SAMPLE_RATE,
                    chunks=len(streamed.chunk_times),
                )
                log(
                    f"{args.variant}: streaming {r + 1}/{args.stream_repeats}: unstreamed {unstreamed.seconds:.2f} s, "
                    f"first audio {streamed.first_chunk_seconds:.3f} s, done {streamed.total_seconds:.2f} s"
                )

            for level in levels:
                record("level_started", level=level)
                result = run_level(predictor.url, args.variant, list(range(level)), args.tokens, args.seed)
                record(
                    "level",
                    level=level,
                    wall_s=result["wall_s"],
                    audio_s=result["audio_s"],
                    throughput=result["audio_s"] / result["wall_s"],
                    ttfa_median_s=statistics.median(result["ttfa_s"]),
                    ttfa_max_s=max(result["ttfa_s"]),
                    latency_median_s=statistics.median(result["latency_s"]),
                )
                log(
                    f"{args.variant} N={level}: {result['audio_s'] / result['wall_s']:.2f} audio s per wall s, "
                    f"TTFA median {statistics.median(result['ttfa_s']):.3f} s, wall {result['wall_s']:.1f} s"
                )
        finally:  # briefly: a phase cut short has 10 s from SIGTERM to SIGKILL
            predictor.session.close()
            predictor.process.stop(timeout=5)
    log(f"{args.variant}: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
