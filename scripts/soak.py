"""Memory soak (issue 13.7): many mixed requests through the real stack, the predictor's and the adapter's
RSS sampled after each, and a bound on their growth after a warm-up plateau.

`make soak` (or `python -m scripts.soak`) starts a turbo-only predictor on random weights and an adapter
in front of it, then sends the requests one after another, rotating through the kinds a deployment sees:
a plain `POST /api/tts`, a streamed one, a WebSocket `say` (a new connection each time) and an OpenAI SDK
call; every tenth request first uploads a new voice through the voices API and speaks with it, and the
others speak with the latest voice. After the warm-up (models touched, the voice cache full, allocator
pools grown) RSS must stay flat: the growth from the plateau to the end, each the median of a window of
samples, must stay under GROWTH_BOUND_MIB for each process. Figures go to stdout, the samples to
OUT/soak-<run>.csv and .json and the curves to OUT/soak-<run>.png.

`--leak-voices` is the negative control: the predictor runs with CHATTERBOX_TEST_LEAK_VOICES=1
(predictor/engine/voices.py), which keeps every prepared voice and every request's reference audio, the
leak class reported upstream (voices pinned in memory); the same soak must then exceed the bound.

Exit status: 0 within the bound, 1 over it (the expected outcome with --leak-voices), 2 when a request
failed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openai
import psutil
import requests
import soundfile as sf
from websockets.sync.client import connect

from predictor.engine.voices import LEAK_VOICES_SWITCH
from scripts.processes import (
    ROOT,
    ManagedProcess,
    adapter_command,
    free_port,
    local_adapter_env,
    predictor_command,
)
from scripts.random_weights import write_reference_wav

MIB = 1024 * 1024
# Growth allowed after the warm-up plateau, per process. Measured on 2 CPU cores (docs/benchmarks.md, "Memory soak"):
# a normal run of 1,000 requests grows 3 MiB (predictor) and 0.6 MiB (adapter) after the warm-up; the leak
# control grows by about 2 MiB a request, past the bound within some 20 requests.
GROWTH_BOUND_MIB = 32.0
# Samples in the medians that stand for "the plateau" and "the end" (RSS steps up and down by a few MiB
# as allocator arenas are reused; a median of a window is what the bound compares).
WINDOW = 10
# Speech tokens per request: enough for real audio through every codec, few enough for 1,000 requests on CPU.
MAX_NEW_TOKENS = 6
# A small voice cache fills early and turns over from then on, so the plateau comes early too: a voice
# costs its prepared conditionals and T3 prompt prefix (turbo bf16: 37 MB), and until the cache is full
# every new voice adds that much (see `shortest_warmup`).
VOICE_CACHE_SIZE = 2
# New voices are 6 s clips (turbo needs more than 5 s; a longer one costs every request more S3Gen
# prompt) as a recording tool exports them: 48 kHz stereo 32-bit float WAV, 2.2 MiB. Upstream resamples to
# mono 24 and 16 kHz, so the model's work is that of any 6 s clip; the file's size is what the leak control
# pins per request, large enough to stand out of the allocator's noise within a hundred requests.
VOICE_SECONDS = 6.0
VOICE_SAMPLE_RATE = 48000
VOICE_CHANNELS = 2
# The predictor's torch threads. The soak measures memory, not speed: one thread keeps a request's time
# steady on a shared machine, where OpenMP's barriers over two threads on two busy cores stall for seconds.
TORCH_THREADS = 1
NEW_VOICE_EVERY = 10
# Pause before each sample: the predictor releases its free heap once it goes idle (predictor/heap.py),
# milliseconds after the response's last bytes left it; a sample taken before that reads 40-60 MiB higher.
SETTLE_S = 0.1
KINDS = ("plain", "streamed", "websocket", "openai")
REQUEST_TIMEOUT_S = 300.0


def shortest_warmup() -> int:
    """The last request before the voice after the first eviction: a shorter warm-up would count
    voices filling the cache as growth."""
    first_eviction = VOICE_CACHE_SIZE * NEW_VOICE_EVERY + 1
    return first_eviction + NEW_VOICE_EVERY - 1


@dataclass
class SoakConfig:
    requests: int = 1000
    warmup: int = 200
    leak_voices: bool = False
    max_new_tokens: int = MAX_NEW_TOKENS
    bound_mib: float = GROWTH_BOUND_MIB
    voice_seconds: float = VOICE_SECONDS
    threads: int | None = TORCH_THREADS  # None: torch's default (one per core)
    weights: Path = ROOT / "build" / "random-weights"
    out: Path = ROOT / "build" / "soak"

    @property
    def run_name(self) -> str:
        return "leak" if self.leak_voices else "normal"


@dataclass
class ProcessFigures:
    start_mib: float  # after loading, before the first request
    plateau_mib: float  # median of the window ending at the warm-up
    end_mib: float  # median of the last window
    growth_mib: float  # end - plateau: what the bound applies to
    slope_mib_per_100: float  # least-squares slope after the warm-up
    bound_mib: float

    @property
    def within_bound(self) -> bool:
        return self.growth_mib <= self.bound_mib


@dataclass
class SoakReport:
    config: SoakConfig
    seconds: float
    kinds: dict[str, int]
    predictor: ProcessFigures
    adapter: ProcessFigures
    samples: list[dict] = field(repr=False)
    files: list[Path] = field(default_factory=list)

    @property
    def within_bound(self) -> bool:
        return self.predictor.within_bound and self.adapter.within_bound


class SoakRequestError(RuntimeError):
    """A request of the soak failed: the soak measures memory under load that is served, so it stops."""


def tree_rss(process: psutil.Process) -> int:
    """The process's RSS and its children's (a predictor that forks workers counts them all)."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def figures(series: list[float], warmup: int, bound_mib: float) -> ProcessFigures:
    """`series[0]` is before the first request, `series[i]` after request i (MiB)."""
    plateau = statistics.median(series[max(1, warmup - WINDOW + 1) : warmup + 1])
    end = statistics.median(series[-WINDOW:])
    after = series[warmup:]
    slope = 0.0
    if len(after) > 1:
        slope = statistics.linear_regression(range(len(after)), after).slope * 100
    return ProcessFigures(
        start_mib=series[0],
        plateau_mib=plateau,
        end_mib=end,
        growth_mib=end - plateau,
        slope_mib_per_100=slope,
        bound_mib=bound_mib,
    )


def turbo_predictor_env(weights: Path, voices_dir: Path, max_new_tokens: int, threads: int | None) -> dict[str, str]:
    """A turbo-only predictor on `weights` (the soak's and the chaos soak's), quiet, with a small voice cache."""
    env = {k: v for k, v in os.environ.items() if k != LEAK_VOICES_SWITCH}
    env.update(
        MODEL_DIR=str(weights),
        VOICES_DIR=str(voices_dir),
        HF_HUB_OFFLINE="1",
        LOAD_STANDARD="false",
        LOAD_TURBO="true",
        LOAD_MULTILINGUAL="false",
        MAX_NEW_TOKENS=str(max_new_tokens),
        VOICE_CACHE_SIZE=str(VOICE_CACHE_SIZE),
        LOG_LEVEL="warning",
        PYTHONUNBUFFERED="1",
    )
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


class Stack:
    """A turbo-only predictor on random weights and an adapter in front of it, on loopback."""

    def __init__(self, config: SoakConfig, voices_dir: Path, log_dir: Path):
        env = turbo_predictor_env(config.weights, voices_dir, config.max_new_tokens, config.threads)
        if config.leak_voices:
            env[LEAK_VOICES_SWITCH] = "1"
        http_port = free_port()
        self.predictor = ManagedProcess(
            predictor_command(http_port, free_port()),
            env=env,
            name=f"soak-predictor-{config.run_name}",
            log_dir=log_dir,
        )
        self.adapter: ManagedProcess | None = None
        try:
            self.predictor.wait_http(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=600)
            port = free_port()
            adapter_env = local_adapter_env(port, f"http://127.0.0.1:{http_port}", voices_dir)
            self.adapter = ManagedProcess(
                adapter_command(), env=adapter_env, name=f"soak-adapter-{config.run_name}", log_dir=log_dir
            )
            self.adapter.port = port
            self.adapter.wait_http(f"{self.adapter.url}/health", timeout=120)
        except BaseException:
            self.stop()
            raise
        self.predictor_process = psutil.Process(self.predictor.popen.pid)
        self.adapter_process = psutil.Process(self.adapter.popen.pid)

    def log_tails(self, characters: int = 3000) -> str:
        processes = [self.predictor] + ([self.adapter] if self.adapter is not None else [])
        return "\n".join(f"--- {p.name} log (end) ---\n{p.output()[-characters:]}" for p in processes)

    @property
    def url(self) -> str:
        assert self.adapter is not None
        return self.adapter.url

    def stop(self) -> None:
        if self.adapter is not None:
            self.adapter.stop()
        self.predictor.stop()


class Client:
    """The soak's requests, each through a client a user would use; any failure raises SoakRequestError."""

    def __init__(self, stack: Stack, max_new_tokens: int, voice_seconds: float):
        self.url = stack.url
        self.ws_url = stack.adapter.ws_url if stack.adapter else ""
        self.session = requests.Session()
        self.openai = openai.OpenAI(
            base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S
        )
        self.max_new_tokens = max_new_tokens
        self.voice_seconds = voice_seconds
        self.voice: str | None = None

    def close(self) -> None:
        self.session.close()
        self.openai.close()

    def _voice(self, seed: int) -> dict:
        voice: dict = {"max_new_tokens": self.max_new_tokens, "seed": seed}
        if self.voice is not None:
            voice["audio_prompt_path"] = self.voice
        return voice

    def upload_voice(self, number: int) -> None:
        content = reference_clip(self.voice_seconds, seed=10_000 + number)
        name = f"soak-{number:05d}.wav"
        response = self.session.post(
            f"{self.url}/api/voices/upload", files={"file": (name, content, "audio/wav")}, timeout=REQUEST_TIMEOUT_S
        )
        _expect(response.status_code == 201, f"upload {name}: {response.status_code} {response.text[:200]}")
        self.voice = name

    def plain(self, text: str, seed: int) -> None:
        body: dict[str, Any] = {"text": text, "model": "turbo", "voice": self._voice(seed)}
        response = self.session.post(f"{self.url}/api/tts", json=body, timeout=REQUEST_TIMEOUT_S)
        _expect(response.status_code == 200, f"plain: {response.status_code} {response.text[:200]}")
        samples, _ = sf.read(io.BytesIO(response.content))
        _expect(len(samples) > 0, "plain: no audio")

    def streamed(self, text: str, seed: int) -> None:
        body: dict[str, Any] = {"text": text, "model": "turbo", "voice": self._voice(seed)}
        body["audio"] = {"format": "pcm", "stream": True}
        with self.session.post(f"{self.url}/api/tts", json=body, stream=True, timeout=REQUEST_TIMEOUT_S) as response:
            _expect(response.status_code == 200, f"streamed: {response.status_code} {response.text[:200]}")
            received = sum(len(piece) for piece in response.iter_content(chunk_size=None))
        _expect(received > 0, "streamed: no audio")

    def websocket(self, text: str, seed: int) -> None:
        say = {
            "type": "say",
            "id": f"soak-{seed}",
            "text": text,
            "model": "turbo",
            "voice": self._voice(seed),
            "audio": {"format": "pcm_s16le", "sample_rate": 24000},
        }
        with connect(self.ws_url, open_timeout=30, max_size=None) as ws:
            _expect(json.loads(ws.recv(timeout=30))["type"] == "ready", "websocket: no ready message")
            ws.send(json.dumps(say))
            chunks = 0
            while True:
                message = json.loads(ws.recv(timeout=REQUEST_TIMEOUT_S))
                if message["type"] == "chunk":
                    chunks += 1
                elif message["type"] == "done":
                    break
                else:
                    raise SoakRequestError(f"websocket: {message}")
        _expect(chunks > 0, "websocket: no audio")

    def openai_sdk(self, text: str, seed: int) -> None:
        voice = self.voice.removesuffix(".wav") if self.voice else "alloy"
        try:
            audio = self.openai.audio.speech.create(
                model="tts-1",
                voice=voice,
                input=text,
                response_format="mp3",
                extra_body={"max_new_tokens": self.max_new_tokens, "seed": seed},
            ).read()
        except openai.APIError as exc:
            raise SoakRequestError(f"openai: {exc}") from None
        _expect(len(audio) > 0, "openai: no audio")


def reference_clip(seconds: float, seed: int) -> bytes:
    """A new speaker (scripts.random_weights' voice-like signal) as a 48 kHz stereo float WAV."""
    with tempfile.TemporaryDirectory() as folder:
        path = write_reference_wav(Path(folder) / "voice.wav", seconds, VOICE_SAMPLE_RATE, seed)
        mono, rate = sf.read(path, dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, np.repeat(mono[:, None], VOICE_CHANNELS, axis=1), rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise SoakRequestError(message)


def request_kind(number: int) -> str:
    """The kind of request `number` (0-based): a new voice every NEW_VOICE_EVERY, the others in rotation."""
    if number % NEW_VOICE_EVERY == 0:
        return "new-voice"
    return KINDS[(number - number // NEW_VOICE_EVERY - 1) % len(KINDS)]


def send(client: Client, number: int) -> str:
    kind = request_kind(number)
    text = f"Soak request number {number}."
    if kind == "new-voice":
        client.upload_voice(number)
        client.plain(text, number)
    else:
        actions: dict[str, Callable[[str, int], None]] = {
            "plain": client.plain,
            "streamed": client.streamed,
            "websocket": client.websocket,
            "openai": client.openai_sdk,
        }
        actions[kind](text, number)
    return kind


def run_soak(config: SoakConfig, progress: Callable[[str], None] = lambda line: None) -> SoakReport:
    if not 0 < config.warmup < config.requests - WINDOW:
        raise ValueError(f"the warm-up ({config.warmup}) must leave at least {WINDOW} requests after it")
    if config.warmup < shortest_warmup():
        raise ValueError(
            f"the warm-up ({config.warmup}) must reach request {shortest_warmup()}, after the voice cache turns over"
        )
    config.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chatterbox-soak-") as folder:
        voices_dir = Path(folder) / "voices"
        voices_dir.mkdir()
        started = time.monotonic()
        stack = Stack(config, voices_dir, Path(folder))
        progress(f"soak ({config.run_name}): stack ready in {time.monotonic() - started:.0f} s")
        client = Client(stack, config.max_new_tokens, config.voice_seconds)
        samples: list[dict] = []
        kinds: dict[str, int] = {}

        def sample(number: int, kind: str) -> None:
            time.sleep(SETTLE_S)
            samples.append(
                {
                    "request": number,
                    "kind": kind,
                    "seconds": round(time.monotonic() - started, 3),
                    "predictor_rss_mib": tree_rss(stack.predictor_process) / MIB,
                    "adapter_rss_mib": tree_rss(stack.adapter_process) / MIB,
                }
            )

        try:
            started = time.monotonic()
            sample(0, "start")
            for number in range(config.requests):
                try:
                    kind = send(client, number)
                except (SoakRequestError, OSError) as exc:
                    raise SoakRequestError(f"request {number}: {exc}\n{stack.log_tails()}") from None
                kinds[kind] = kinds.get(kind, 0) + 1
                sample(number + 1, kind)
                if (number + 1) % 100 == 0:
                    last = samples[-1]
                    progress(
                        f"  {number + 1} requests, {last['seconds']:.0f} s: predictor "
                        f"{last['predictor_rss_mib']:.0f} MiB, adapter {last['adapter_rss_mib']:.0f} MiB"
                    )
        finally:
            client.close()
            stack.stop()
        seconds = time.monotonic() - started
    report = SoakReport(
        config=config,
        seconds=seconds,
        kinds=kinds,
        predictor=figures([s["predictor_rss_mib"] for s in samples], config.warmup, config.bound_mib),
        adapter=figures([s["adapter_rss_mib"] for s in samples], config.warmup, config.bound_mib),
        samples=samples,
    )
    report.files = write_outputs(report)
    return report


def write_outputs(report: SoakReport) -> list[Path]:
    config = report.config
    stem = config.out / f"soak-{config.run_name}"
    csv_path, json_path, png_path = stem.with_suffix(".csv"), stem.with_suffix(".json"), stem.with_suffix(".png")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(report.samples[0]))
        writer.writeheader()
        writer.writerows(report.samples)
    summary = {
        "config": {**asdict(config), "weights": str(config.weights), "out": str(config.out)},
        "seconds": report.seconds,
        "kinds": report.kinds,
        "predictor": asdict(report.predictor),
        "adapter": asdict(report.adapter),
        "within_bound": report.within_bound,
        "samples": report.samples,
    }
    json_path.write_text(json.dumps(summary, indent=1) + "\n")
    plot(report, png_path)
    return [csv_path, json_path, png_path]


def plot(report: SoakReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = report.config
    numbers = [s["request"] for s in report.samples]
    fig, axes = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for axis, key, name, figs in (
        (axes[0], "predictor_rss_mib", "predictor", report.predictor),
        (axes[1], "adapter_rss_mib", "adapter", report.adapter),
    ):
        axis.plot(numbers, [s[key] for s in report.samples], linewidth=1, label=f"{name} RSS")
        axis.axvline(config.warmup, color="grey", linestyle=":", label="end of warm-up")
        axis.axhline(figs.plateau_mib, color="green", linestyle="--", linewidth=0.8, label="plateau")
        axis.axhline(figs.plateau_mib + figs.bound_mib, color="red", linestyle="--", linewidth=0.8, label="bound")
        axis.set_ylabel("RSS (MiB)")
        verdict = "within" if figs.within_bound else "OVER"
        axis.set_title(f"{name}: growth after warm-up {figs.growth_mib:+.1f} MiB ({verdict} {figs.bound_mib:g} MiB)")
        axis.legend(loc="lower right", fontsize=8)
        axis.grid(alpha=0.3)
    axes[1].set_xlabel("requests")
    leak = ", leak control (CHATTERBOX_TEST_LEAK_VOICES=1)" if config.leak_voices else ""
    fig.suptitle(f"Memory soak: {config.requests} mixed requests, max_new_tokens={config.max_new_tokens}{leak}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(report: SoakReport) -> str:
    lines = [
        "| process | start MiB | plateau MiB | end MiB | growth after warm-up MiB | slope MiB/100 req | bound MiB | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, figs in (("predictor", report.predictor), ("adapter", report.adapter)):
        verdict = "within" if figs.within_bound else "OVER"
        lines.append(
            f"| {name} | {figs.start_mib:.1f} | {figs.plateau_mib:.1f} | {figs.end_mib:.1f} | {figs.growth_mib:+.1f} "
            f"| {figs.slope_mib_per_100:+.2f} | {figs.bound_mib:g} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests to send (default 1000)")
    parser.add_argument(
        "--warmup",
        type=int,
        help="requests before the plateau is taken (default a fifth, at least the voice cache's turnover)",
    )
    parser.add_argument("--leak-voices", action="store_true", help=f"the negative control ({LEAK_VOICES_SWITCH}=1)")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="speech tokens per request")
    parser.add_argument("--bound-mib", type=float, default=GROWTH_BOUND_MIB, help="growth allowed after warm-up")
    parser.add_argument("--voice-seconds", type=float, default=VOICE_SECONDS, help="length of each new voice")
    parser.add_argument(
        "--threads", type=int, default=TORCH_THREADS, help="the predictor's torch threads (0: one per core)"
    )
    parser.add_argument("--weights", type=Path, default=ROOT / "build" / "random-weights")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "soak")
    args = parser.parse_args(argv)
    config = SoakConfig(
        requests=args.requests,
        warmup=args.warmup if args.warmup is not None else max(args.requests // 5, shortest_warmup()),
        leak_voices=args.leak_voices,
        max_new_tokens=args.max_new_tokens,
        bound_mib=args.bound_mib,
        voice_seconds=args.voice_seconds,
        threads=args.threads or None,
        weights=args.weights,
        out=args.out,
    )
    try:
        report = run_soak(config, progress=lambda line: print(line, flush=True))
    except SoakRequestError as exc:
        print(f"soak: a request failed: {exc}", file=sys.stderr)
        return 2
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(report.kinds.items()))
    print(f"\nsoak ({config.run_name}): {config.requests} requests ({kinds}) in {report.seconds:.0f} s")
    print(f"warm-up: {config.warmup} requests; plateau and end are medians of {WINDOW} samples\n")
    print(table(report))
    print("\n" + "\n".join(f"wrote {path}" for path in report.files))
    if report.within_bound:
        print("\nRSS growth after the warm-up is within the bound.")
        return 0
    if config.leak_voices:
        print("\nRSS growth exceeds the bound: the negative control caught its leak, as it should.")
    else:
        print("\nRSS growth after the warm-up exceeds the bound: a leak?")
    return 1


if __name__ == "__main__":
    sys.exit(main())
