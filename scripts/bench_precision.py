"""Fidelity of reduced precision (DTYPE) against float32, on the real engine, in one run.

    python -m scripts.bench_precision --weights DIR [--variants standard,turbo] [--requests 3]
        [--tokens 50] [--seed 7] [--dtype bfloat16]

Per variant, per request (its own seed and text, the built-in voice):
- tokens: the float32 engine and the reduced-precision one (T3 and flow at --dtype) decode the
  same request; reported: requests whose tokens are all identical, and the share of tokens
  identical before the first divergence.
- audio: the float32 tokens are vocoded (S3Gen flow + HiFT + watermark, unstreamed) four ways:
  float32 twice with the same seed (must be identical: the run is deterministic), float32 with
  another seed (the noise floor: HiFT's excitation is random, so two float32 renderings of the
  same tokens differ by this much), and at --dtype with the first seed. Each distance is given as
  the waveform's relative error (RMS of the difference over RMS of the float32 audio, in dB) and as
  a log-spectral distance (mean absolute difference of 20·log10 STFT magnitudes, in dB).
The question each row answers: is the reduced-precision rendering closer to float32 than float32 is
to itself across seeds? (ratio < 1).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from contract.variants import VARIANT_NAMES
from predictor.config import DTYPE_CHOICES, PredictorSettings
from predictor.engine.engine import SPEECH_VOCAB_SIZE, ChatterboxEngine

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "Precision is measured against float thirty two, token by token and sample by sample.",
    "A third sentence, so that no single prompt decides the figures.",
    "Numbers like twenty one and forty two are spoken too.",
]
STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[bench-precision {time.monotonic() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision-requests", type=int, default=3, help="requests per variant (default 3)")
    parser.add_argument("--precision-tokens", type=int, default=50, help="speech-token cap per request (default 50)")
    parser.add_argument(
        "--precision-dtype",
        choices=[c for c in DTYPE_CHOICES if c not in ("auto", "float32")],
        default="bfloat16",
        help="the reduced precision compared with float32 (default bfloat16)",
    )


def load_engine(weights: str, variant: str, dtype: str, device: str) -> ChatterboxEngine:
    settings = PredictorSettings.model_validate(
        {
            "model_dir": weights,
            "device": device,
            "dtype": dtype,
            "load_standard": variant == "standard",
            "load_turbo": variant == "turbo",
            "load_multilingual": variant == "multilingual",
            "max_new_tokens": 10_000,
        }
    )
    engine = ChatterboxEngine(settings)
    engine.load()
    return engine


def decode(engine: ChatterboxEngine, variant: str, text: str, seed: int, tokens: int):
    request = engine.prepare(variant, text, {"seed": seed, "max_new_tokens": tokens})
    loaded = engine.variants[variant]
    generator = torch.Generator(device=engine.device).manual_seed(seed)
    with torch.inference_mode():
        t3_cond = engine._t3_cond(loaded, request)
        prefix = engine._prefix_lookup(loaded, request)
        sampled = list(engine._speech_tokens(loaded, request.pieces[0], t3_cond, request.params, generator, prefix))
    return request, sampled


def vocode(engine: ChatterboxEngine, variant: str, request, tokens: list[int], seed: int) -> np.ndarray:
    loaded = engine.variants[variant]
    speech = torch.tensor([t for t in tokens if t < SPEECH_VOCAB_SIZE], dtype=torch.long, device=engine.device)
    generator = torch.Generator(device=engine.device).manual_seed(seed)
    with torch.inference_mode():
        return engine._vocode(loaded, speech, request.conds, generator)


def relative_error_db(reference: np.ndarray, other: np.ndarray) -> float:
    n = min(len(reference), len(other))
    difference = np.sqrt(np.mean((reference[:n] - other[:n]) ** 2))
    if difference == 0:
        return float("-inf")
    return float(20 * np.log10(difference / max(np.sqrt(np.mean(reference[:n] ** 2)), 1e-12)))


def log_spectral_distance_db(reference: np.ndarray, other: np.ndarray) -> float:
    n = min(len(reference), len(other))

    def spectrum(x: np.ndarray) -> torch.Tensor:
        window = torch.hann_window(1024)
        stft = torch.stft(torch.from_numpy(x[:n].astype(np.float32)), 1024, 256, window=window, return_complex=True)
        return 20 * torch.log10(stft.abs().clamp_min(1e-5))

    return float((spectrum(reference) - spectrum(other)).abs().mean())


def identical_prefix(a: list[int], b: list[int]) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def variant_rows(weights: str, variant: str, args: argparse.Namespace, device: str) -> dict:
    seeds = [args.seed + 101 * i for i in range(args.precision_requests)]
    texts = [TEXTS[i % len(TEXTS)] for i in range(args.precision_requests)]
    log(f"{variant}: float32 engine")
    engine = load_engine(weights, variant, "float32", device)
    reference_tokens, audio32, audio32_again, audio32_other = [], [], [], []
    for text, seed in zip(texts, seeds, strict=True):
        request, tokens = decode(engine, variant, text, seed, args.precision_tokens)
        reference_tokens.append(tokens)
        audio32.append(vocode(engine, variant, request, tokens, seed))
        audio32_again.append(vocode(engine, variant, request, tokens, seed))
        audio32_other.append(vocode(engine, variant, request, tokens, seed + 1))
    del engine
    gc.collect()
    log(f"{variant}: {args.precision_dtype} engine")
    engine = load_engine(weights, variant, args.precision_dtype, device)
    reduced_tokens, audio_reduced = [], []
    for i, (text, seed) in enumerate(zip(texts, seeds, strict=True)):
        request, tokens = decode(engine, variant, text, seed, args.precision_tokens)
        reduced_tokens.append(tokens)
        audio_reduced.append(vocode(engine, variant, request, reference_tokens[i], seed))
    precision = engine.precision.describe()
    del engine
    gc.collect()

    def median_of(metric, others) -> float:
        return statistics.median(metric(a, b) for a, b in zip(audio32, others, strict=True))

    prefix = sum(identical_prefix(a, b) for a, b in zip(reference_tokens, reduced_tokens, strict=True))
    floor_wave, reduced_wave = median_of(relative_error_db, audio32_other), median_of(relative_error_db, audio_reduced)
    floor_lsd = median_of(log_spectral_distance_db, audio32_other)
    reduced_lsd = median_of(log_spectral_distance_db, audio_reduced)
    return {
        "variant": variant,
        "precision": precision,
        "requests": len(seeds),
        "tokens_identical_requests": sum(a == b for a, b in zip(reference_tokens, reduced_tokens, strict=True)),
        "tokens_identical_prefix": prefix / max(1, sum(len(t) for t in reference_tokens)),
        "float32_repeat_identical": all(np.array_equal(a, b) for a, b in zip(audio32, audio32_again, strict=True)),
        "floor_wave_db": floor_wave,
        "reduced_wave_db": reduced_wave,
        "floor_lsd_db": floor_lsd,
        "reduced_lsd_db": reduced_lsd,
    }


def render(rows: list[dict], dtype: str, tokens: int) -> str:
    lines = [
        f"Precision: {dtype} against float32, the same requests (built-in voice, cap {tokens} tokens), medians",
        "",
        "| variant | precision | requests with identical tokens | tokens identical before divergence "
        "| float32 again, same seed | waveform error: float32 other seed (floor) / "
        f"{dtype} | log-spectral distance: floor / {dtype} | {dtype} ÷ floor (spectral) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['precision']} | {row['tokens_identical_requests']}/{row['requests']} "
            f"| {100 * row['tokens_identical_prefix']:.0f}% "
            f"| {'identical' if row['float32_repeat_identical'] else 'DIFFERENT'} "
            f"| {row['floor_wave_db']:.1f} dB / {row['reduced_wave_db']:.1f} dB "
            f"| {row['floor_lsd_db']:.2f} dB / {row['reduced_lsd_db']:.2f} dB "
            f"| {row['reduced_lsd_db'] / row['floor_lsd_db']:.2f} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, weights: str, device: str) -> str:
    rows = [variant_rows(weights, variant, args, device) for variant in args.variants]
    return render(rows, args.precision_dtype, args.precision_tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="folder with one sub-folder per variant")
    parser.add_argument("--variants", default="standard,turbo", help="comma-separated (default standard,turbo)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=7, help="seed of request 0 (request i: seed + 101 i)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for name in args.variants:
        if name not in VARIANT_NAMES:
            parser.error(f"--variants: unknown variant {name!r}")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    print(run(args, args.weights, device), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
