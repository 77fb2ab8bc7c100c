"""Chaos soak (issue 23.2): mixed load through the real stack while a seeded schedule injects faults.

`make chaos` (or `python -m scripts.chaos`) starts a turbo-only predictor on random weights and an adapter
in front of it, then runs CLIENTS concurrent clients for DURATION seconds, each sending a seeded mix of
plain and streamed `POST /api/tts`, WebSocket `say`, OpenAI `/v1/audio/speech`, voice uploads and
default-voice changes. Meanwhile a fault injector works through a seeded schedule, one fault at a time
at random moments, every kind at least once:

  predictor-kill     kill -9 the predictor, then start it again
  predictor-stop     SIGSTOP the predictor for 5-30 s, then SIGCONT
  predictor-term     SIGTERM the predictor (it drains), then start it again
  adapter-term       SIGTERM the adapter (it drains), then start it again
  adapter-kill       kill -9 the adapter in the middle of an upload, then start it again

What it checks (any breach makes the exit status 1):
- every request ends within its deadline, in success or in a clear error: an HTTP 4xx/5xx with a message,
  a WebSocket `error` with a message, a transfer cut without its ending (HTTP's failed-transfer signal), or
  a refused/reset connection while the adapter itself is down; never a hang, a bare 500, or an answer that
  says it is complete but is not (a WAV shorter than its header, WebSocket chunks missing before `done`);
- every acknowledged upload is complete and decodable afterwards, every file in the voice folder decodes,
  and no temp (partial) upload is left;
- the default voice is always a valid voice (checked after each change and at the end);
- RSS of both processes plateaus (growth from the warm-up's plateau to the end within the bound);
- after each fault, requests succeed again within RECOVERY_BOUND_S of the predictor (or, for adapter
  faults, the adapter) being ready again: a recovery probe measures it.

Output in OUT (build/chaos): chaos-<seed>.png (requests and outcomes over time, faults shaded; RSS),
chaos-<seed>.json (everything) and chaos-<seed>.md (the figures).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import openai
import psutil
import requests
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from adapter.voice_library import DEFAULT_FILE, TEMP_PREFIX
from contract.admission import RETRY_AFTER_S
from scripts.processes import (
    ROOT,
    ManagedProcess,
    adapter_command,
    free_port,
    local_adapter_env,
    predictor_command,
)
from scripts.random_weights import write_reference_wav
from scripts.soak import MIB, reference_clip, tree_rss, turbo_predictor_env

FAULT_KINDS = ("predictor-kill", "predictor-stop", "predictor-term", "adapter-term", "adapter-kill")
REQUEST_KINDS = ("plain", "streamed", "websocket", "openai", "upload", "set-default")
SYNTHESIS_KINDS = REQUEST_KINDS[:4]  # the ones that need the predictor: what recovery is judged by
# How often each kind is drawn: synthesis dominates, as in a deployment; uploads and default changes
# are frequent enough to be hit by faults.
REQUEST_WEIGHTS = (3, 3, 3, 3, 1, 1)
# Speech tokens per request: real audio through every path, cheap on a shared CPU.
MAX_NEW_TOKENS = 6
# Requests after the predictor or the adapter is ready again must succeed within this (issue 23.2).
RECOVERY_BOUND_S = 10.0
# The adapter's bounds on a started request: a stream in flight survives the longest freeze (30 s).
FIRST_CHUNK_TIMEOUT_S = 60.0
CHUNK_GAP_TIMEOUT_S = 45.0
# Every request must end (success or error) within this; past it, it hung.
REQUEST_DEADLINE_S = FIRST_CHUNK_TIMEOUT_S + CHUNK_GAP_TIMEOUT_S + 30.0
# Short drains keep restarts quick; the drain itself is what is under test, not its length.
DRAIN_TIMEOUT_S = 5
# A transport failure that ends this long after a fault's recovery is still that fault's doing.
FAULT_GRACE_S = 3.0
RSS_BOUND_MIB = 64.0
RSS_EVERY_S = 1.0
START_TIMEOUT_S = 300.0
VOICE_SECONDS = 6.0  # turbo needs more than 5 s of reference


@dataclass
class ChaosConfig:
    duration_s: float = 600.0
    clients: int = 3
    seed: int = 23
    stop_s: tuple[float, float] = (5.0, 30.0)  # SIGSTOP length, drawn per fault
    gap_s: tuple[float, float] = (10.0, 40.0)  # quiet time before each fault, drawn per fault
    think_s: tuple[float, float] = (0.5, 2.0)  # a client's pause between requests (at least Retry-After)
    warmup_s: float = 20.0  # no fault before it; the RSS plateau is the median of the 10 s after it
    max_new_tokens: int = MAX_NEW_TOKENS
    rss_bound_mib: float = RSS_BOUND_MIB
    weights: Path = ROOT / "build" / "random-weights"
    out: Path = ROOT / "build" / "chaos"


@dataclass
class Fault:
    kind: str
    gap_s: float  # quiet time before it, from the schedule
    stop_s: float = 0.0  # predictor-stop only
    injected: float = 0.0  # seconds since the start of the load
    ready: float = 0.0  # the faulted process ready again
    accepting: float | None = None  # the adapter's /health 200 again: it takes requests to the predictor
    # Requests succeed again: the first synthesis that succeeded was sent at `recovered` (or was in flight
    # at `ready`, then `recovered` is `ready`), and it was served (its last byte) at `served`.
    recovered: float | None = None
    served: float | None = None
    note: str = ""

    @property
    def recovery_s(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.ready

    @property
    def served_s(self) -> float | None:
        return None if self.served is None else self.served - self.ready

    @property
    def accepting_s(self) -> float | None:
        return None if self.accepting is None else self.accepting - self.ready


@dataclass
class Outcome:
    client: int
    kind: str
    start: float
    end: float
    category: str  # ok | refused | error | cut | down | breach
    status: int | str | None = None
    detail: str = ""


def schedule(config: ChaosConfig) -> list[Fault]:
    """The seeded list of faults: each kind once per round in a shuffled order, rounds until the
    schedule fills the duration (at least one round)."""
    rng = random.Random(config.seed)
    faults: list[Fault] = []
    planned = config.warmup_s  # the injector drops what does not fit after the first round
    while not faults or planned < config.duration_s:
        kinds = list(FAULT_KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            gap = rng.uniform(*config.gap_s)
            stop = rng.uniform(*config.stop_s) if kind == "predictor-stop" else 0.0
            faults.append(Fault(kind, round(gap, 1), round(stop, 1)))
            planned += gap + stop + 20.0  # a restart takes some 20 s on a busy CPU
    return faults


class Stack:
    """The predictor and the adapter on fixed ports, each restartable on its address."""

    def __init__(self, config: ChaosConfig, voices_dir: Path, log_dir: Path):
        self.config = config
        self.voices_dir = voices_dir
        self.log_dir = log_dir
        self.predictor_port, self.grpc_port, self.adapter_port = free_port(), free_port(), free_port()
        self.predictor_url = f"http://127.0.0.1:{self.predictor_port}"
        self.url = f"http://127.0.0.1:{self.adapter_port}"
        self.ws_url = f"ws://127.0.0.1:{self.adapter_port}/ws/tts"
        self.lock = threading.Lock()  # the RSS sampler reads the processes while the injector swaps them
        self.predictor: ManagedProcess | None = None
        self.adapter: ManagedProcess | None = None
        self.restarts = Counter[str]()

    def start_predictor(self) -> None:
        env = turbo_predictor_env(self.config.weights, self.voices_dir, self.config.max_new_tokens, threads=1)
        env.update(DRAIN_TIMEOUT_S=str(DRAIN_TIMEOUT_S), MAX_CONCURRENT_REQUESTS=str(self.config.clients + 2))
        process = ManagedProcess(
            predictor_command(self.predictor_port, self.grpc_port), env, "chaos-predictor", log_dir=self.log_dir
        )
        with self.lock:
            self.predictor = process
        self.restarts["predictor"] += 1
        process.wait_http(f"{self.predictor_url}/v2/health/ready", timeout=START_TIMEOUT_S)

    def start_adapter(self) -> None:
        env = local_adapter_env(
            self.adapter_port,
            self.predictor_url,
            self.voices_dir,
            DRAIN_TIMEOUT_S=str(DRAIN_TIMEOUT_S),
            FIRST_CHUNK_TIMEOUT_S=str(FIRST_CHUNK_TIMEOUT_S),
            CHUNK_GAP_TIMEOUT_S=str(CHUNK_GAP_TIMEOUT_S),
            MAX_CONCURRENT_REQUESTS=str(self.config.clients + 2),
        )
        process = ManagedProcess(adapter_command(), env, "chaos-adapter", log_dir=self.log_dir)
        process.port = self.adapter_port
        with self.lock:
            self.adapter = process
        self.restarts["adapter"] += 1
        process.wait_http(f"{self.url}/health", timeout=START_TIMEOUT_S)

    def rss_mib(self) -> tuple[float | None, float | None]:
        with self.lock:
            processes = (self.predictor, self.adapter)
        values: list[float | None] = []
        for process in processes:
            try:
                values.append(
                    tree_rss(psutil.Process(process.popen.pid)) / MIB if process and process.alive() else None
                )
            except psutil.Error:
                values.append(None)
        return values[0], values[1]

    def stop(self) -> None:
        for process in (self.adapter, self.predictor):
            if process is not None:
                if process.alive():
                    os.kill(process.popen.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                process.stop()

    def log_tails(self, characters: int = 2000) -> str:
        return "\n".join(
            f"--- {p.name} (end of log) ---\n{p.output()[-characters:]}" for p in (self.predictor, self.adapter) if p
        )


class Run:
    """Shared state of one chaos run: the clock, the outcomes, the faults, the voices."""

    def __init__(self, config: ChaosConfig, stack: Stack):
        self.config = config
        self.stack = stack
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.faults: list[Fault] = []
        self.uploads: dict[str, int] = {}  # acknowledged uploads: name -> frames
        self.voices = ["alice.wav"]  # voices a set-default may name (the initial one, then uploads)
        self.default_problems: list[str] = []
        self.rss: list[dict] = []
        # Windows where the adapter was not running: [signalled, listening again], the end None meanwhile.
        self.adapter_down: list[list[float | None]] = []
        self.killed_uploads: list[str] = []  # names of uploads cut by kill -9: never acknowledged

    def now(self) -> float:
        return time.monotonic() - self.started

    def record(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def in_fault(self, at: float) -> bool:
        """Whether `at` lies within a fault's window (injection to recovery, plus a grace)."""
        with self.lock:
            faults = list(self.faults)
        for fault in faults:
            end = fault.served if fault.served is not None else (fault.ready or self.now())
            if fault.injected <= at <= max(end, fault.ready) + FAULT_GRACE_S:
                return True
        return False

    def adapter_was_down(self, start: float, end: float) -> bool:
        with self.lock:
            windows = [(a, self.now() if b is None else b) for a, b in self.adapter_down]
        return any(a <= end + FAULT_GRACE_S and start <= b + FAULT_GRACE_S for a, b in windows if a is not None)


# ------------------------------------------------------------------------------------------ clients


def _message_of(response: requests.Response) -> str:
    try:
        error = response.json().get("error")
    except ValueError:
        return ""
    if isinstance(error, dict):
        return str(error.get("message") or "")
    return ""


class Client(threading.Thread):
    def __init__(self, run: Run, number: int):
        super().__init__(name=f"chaos-client-{number}", daemon=True)
        self.run_ = run
        self.number = number
        self.rng = random.Random(run.config.seed * 1000 + number)
        self.session = requests.Session()
        self.sdk = openai.OpenAI(
            base_url=f"{run.stack.url}/v1", api_key="unused", max_retries=0, timeout=REQUEST_DEADLINE_S
        )
        self.count = 0

    def run(self) -> None:
        while not self.run_.stopping.is_set():
            kind = self.rng.choices(REQUEST_KINDS, REQUEST_WEIGHTS)[0]
            self.count += 1
            start = self.run_.now()
            outcome = Outcome(self.number, kind, start, start, "breach")
            try:
                getattr(self, kind.replace("-", "_"))(outcome)
            except requests.Timeout as exc:
                outcome.category, outcome.detail = "breach", f"hung: {exc.__class__.__name__}"
            except openai.APITimeoutError:
                outcome.category, outcome.detail = "breach", "hung: the OpenAI call timed out"
            except (
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,  # a stream cut without its ending
                openai.APIConnectionError,
                ConnectionError,
                OSError,
            ) as exc:
                self._transport_failure(outcome, exc)
            except Exception as exc:  # the check itself failed: a breach, with what it saw
                outcome.category, outcome.detail = "breach", f"{exc.__class__.__name__}: {exc}"[:300]
            outcome.end = self.run_.now()
            if outcome.end - outcome.start > REQUEST_DEADLINE_S:
                outcome.category, outcome.detail = "breach", f"took {outcome.end - outcome.start:.0f} s"
            self.run_.record(outcome)
            # A well-behaved client waits the Retry-After (1 s) it was given before it tries again.
            pause = self.rng.uniform(*self.run_.config.think_s)
            time.sleep(max(pause, RETRY_AFTER_S) if outcome.category == "refused" else pause)
        self.session.close()
        self.sdk.close()

    def _transport_failure(self, outcome: Outcome, exc: BaseException) -> None:
        """A connection refused or reset, or a transfer cut: clear only where a fault explains it."""
        end = self.run_.now()
        text = f"{exc.__class__.__name__}: {exc}"[:200]
        if self.run_.adapter_was_down(outcome.start, end):
            outcome.category, outcome.detail = "down", text
        elif self.run_.in_fault(end):
            outcome.category, outcome.detail = "cut", text
        else:
            outcome.category, outcome.detail = "breach", f"transport failure outside any fault: {text}"

    def _http_error(self, outcome: Outcome, response: requests.Response) -> None:
        outcome.status = response.status_code
        message = _message_of(response)
        if response.status_code == 500 or not message:
            outcome.category, outcome.detail = "breach", f"HTTP {response.status_code} {response.text[:200]!r}"
        elif response.status_code in (429, 503):
            retry = response.headers.get("Retry-After", "")
            outcome.category = "refused" if retry.isdigit() else "breach"
            outcome.detail = message if retry.isdigit() else f"no Retry-After on {response.status_code}: {message}"
        else:
            outcome.category, outcome.detail = "error", message

    def _speech(self, seed: int) -> dict:
        return {"max_new_tokens": self.run_.config.max_new_tokens, "seed": seed}

    def plain(self, outcome: Outcome) -> None:
        body: dict[str, Any] = {
            "text": f"Chaos {self.number} {self.count}.",
            "model": "turbo",
            "voice": self._speech(self.count),
        }
        response = self.session.post(f"{self.run_.stack.url}/api/tts", json=body, timeout=REQUEST_DEADLINE_S)
        if response.status_code != 200:
            return self._http_error(outcome, response)
        info = sf.info(io.BytesIO(response.content))
        declared = float(response.headers["X-Audio-Duration-Seconds"])
        if info.frames == 0 or abs(info.frames / info.samplerate - declared) > 0.002:
            outcome.detail = f"WAV of {info.frames} frames against {declared} s declared"
            return  # a breach: an answer that says it is complete but is not
        outcome.category, outcome.status = "ok", 200

    def streamed(self, outcome: Outcome) -> None:
        body: dict[str, Any] = {
            "text": f"Chaos stream {self.number} {self.count}. Second piece.",
            "model": "turbo",
            "voice": self._speech(self.count),
            "audio": {"format": "pcm", "stream": True},
        }
        with self.session.post(
            f"{self.run_.stack.url}/api/tts", json=body, stream=True, timeout=REQUEST_DEADLINE_S
        ) as response:
            if response.status_code != 200:
                response.content  # noqa: B018 (read the error body)
                return self._http_error(outcome, response)
            # A stream that fails after its headers ends without the chunked terminator: requests raises
            # (ChunkedEncodingError, a ConnectionError) rather than returning a shorter body.
            received = sum(len(piece) for piece in response.iter_content(chunk_size=None))
        if received == 0 or received % 2:
            outcome.detail = f"streamed PCM of {received} bytes"
            return
        outcome.category, outcome.status = "ok", 200

    def websocket(self, outcome: Outcome) -> None:
        say = {
            "type": "say",
            "id": f"c{self.number}-{self.count}",
            "text": f"Chaos socket {self.number} {self.count}.",
            "model": "turbo",
            "voice": self._speech(self.count),
            "audio": {"format": "pcm_s16le", "stream": True},
        }
        try:
            with connect(self.run_.stack.ws_url, open_timeout=30, max_size=None) as ws:
                first = json.loads(ws.recv(timeout=30))
                if first["type"] == "error":
                    return self._ws_error(outcome, first)
                ws.send(json.dumps(say))
                indices: list[int] = []
                last_flag = False
                while True:
                    message = json.loads(ws.recv(timeout=REQUEST_DEADLINE_S))
                    if message["type"] == "chunk":
                        indices.append(message["index"])
                        last_flag = message["is_last"]
                    elif message["type"] == "done":
                        break
                    else:
                        return self._ws_error(outcome, message)
        except TimeoutError:
            outcome.detail = "hung: no WebSocket message within the deadline"
            return
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            if code in (1012, 1013):  # service restart, try again later: both say why
                outcome.category, outcome.status, outcome.detail = "refused", code, str(exc)[:200]
                return
            return self._transport_failure(outcome, exc)
        if indices != list(range(len(indices))) or not last_flag:
            outcome.detail = f"done after chunks {indices[:5]}... (last flagged: {last_flag})"
            return
        outcome.category, outcome.status = "ok", "done"

    def _ws_error(self, outcome: Outcome, message: dict) -> None:
        outcome.status = message.get("code")
        if message.get("type") != "error" or not message.get("message") or message.get("code") == 500:
            outcome.category, outcome.detail = "breach", f"unexpected WebSocket message {message}"[:300]
        else:
            outcome.category = "refused" if message["code"] in (429, 503) else "error"
            outcome.detail = str(message["message"])

    def openai(self, outcome: Outcome) -> None:
        try:
            audio = self.sdk.audio.speech.create(
                model="tts-1",
                voice="alloy",
                input=f"Chaos open {self.number} {self.count}.",
                response_format="wav",
                extra_body={"max_new_tokens": self.run_.config.max_new_tokens, "seed": self.count},
            ).read()
        except openai.APIStatusError as exc:
            outcome.status = exc.status_code
            retry = exc.response.headers.get("Retry-After", "")
            if exc.status_code == 500 or not exc.message:
                outcome.category, outcome.detail = "breach", f"HTTP {exc.status_code}: {exc.message!r}"
            elif exc.status_code in (429, 503) and not retry.isdigit():
                outcome.category, outcome.detail = "breach", f"no Retry-After on {exc.status_code}"
            else:
                outcome.category = "refused" if exc.status_code in (429, 503) else "error"
                outcome.detail = exc.message[:200]
            return
        if sf.info(io.BytesIO(audio)).frames == 0:
            outcome.detail = "OpenAI WAV without audio"
            return
        outcome.category, outcome.status = "ok", 200

    def upload(self, outcome: Outcome) -> None:
        name = f"chaos-{self.number}-{self.count}.wav"
        content = reference_clip(VOICE_SECONDS, seed=self.run_.config.seed * 10_000 + self.number * 1000 + self.count)
        response = self.session.post(
            f"{self.run_.stack.url}/api/voices/upload",
            files={"file": (name, content, "audio/wav")},
            timeout=REQUEST_DEADLINE_S,
        )
        if response.status_code != 201:
            return self._http_error(outcome, response)
        with self.run_.lock:
            self.run_.uploads[name] = sf.info(io.BytesIO(content)).frames
            self.run_.voices.append(name)
        outcome.category, outcome.status = "ok", 201

    def set_default(self, outcome: Outcome) -> None:
        with self.run_.lock:
            voice = self.rng.choice(self.run_.voices)
        url = f"{self.run_.stack.url}/api/voice/default"
        response = self.session.post(url, json={"voice_path": voice}, timeout=REQUEST_DEADLINE_S)
        if response.status_code != 200:
            return self._http_error(outcome, response)
        outcome.category, outcome.status = "ok", 200
        problem = check_default(self.run_.stack.voices_dir)
        if problem:
            outcome.category, outcome.detail = "breach", problem
            with self.run_.lock:
                self.run_.default_problems.append(f"{self.run_.now():.1f} s: {problem}")


def check_default(voices_dir: Path) -> str | None:
    """The stored default voice is absent or names a complete, decodable voice file."""
    path = voices_dir / DEFAULT_FILE
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except ValueError as exc:
        return f"{DEFAULT_FILE} is not JSON: {exc}"
    name = stored.get("voice_path") if isinstance(stored, dict) else None
    if name is None:
        return None
    try:
        if sf.info(str(voices_dir / name)).frames == 0:
            return f"the default voice {name} has no audio"
    except (RuntimeError, OSError) as exc:
        return f"the default voice {name} does not decode: {exc}"
    return None


# -------------------------------------------------------------------------------------------- faults


class Injector(threading.Thread):
    def __init__(self, run: Run, plan: list[Fault]):
        super().__init__(name="chaos-injector", daemon=True)
        self.run_ = run
        self.plan = plan
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            # Faults hit a warm service: the first synthesis on a cold predictor (models touched, voices
            # prepared) takes several times longer and would count against the first fault's recovery.
            if self.run_.stopping.wait(self.run_.config.warmup_s):
                return
            for index, fault in enumerate(self.plan):
                # The first round (every kind once) always runs; later faults only within the duration.
                late = self.run_.now() + fault.gap_s > self.run_.config.duration_s
                if index >= len(FAULT_KINDS) and late:
                    return
                if self.run_.stopping.wait(fault.gap_s):
                    return
                self.inject(fault)
        except BaseException as exc:  # reported by the main thread: the run cannot go on
            self.error = exc
            self.run_.stopping.set()

    def inject(self, fault: Fault) -> None:
        run, stack = self.run_, self.run_.stack
        assert stack.predictor is not None and stack.adapter is not None
        fault.injected = run.now()
        with run.lock:
            run.faults.append(fault)
        if fault.kind == "predictor-kill":
            stack.predictor.popen.kill()
            stack.predictor.popen.wait(30)
            stack.start_predictor()
        elif fault.kind == "predictor-stop":
            stack.predictor.popen.send_signal(signal.SIGSTOP)
            time.sleep(fault.stop_s)
            stack.predictor.popen.send_signal(signal.SIGCONT)
        elif fault.kind == "predictor-term":
            stack.predictor.popen.terminate()
            stack.predictor.popen.wait(DRAIN_TIMEOUT_S + 60)
            stack.start_predictor()
        elif fault.kind == "adapter-term":
            window: list[float | None] = [run.now(), None]
            with run.lock:
                run.adapter_down.append(window)
            stack.adapter.popen.terminate()
            stack.adapter.popen.wait(DRAIN_TIMEOUT_S + 30)
            stack.start_adapter()
            window[1] = run.now()
        elif fault.kind == "adapter-kill":
            window = [run.now(), None]
            with run.lock:
                run.adapter_down.append(window)
            fault.note = self.kill_during_upload()
            stack.start_adapter()
            window[1] = run.now()
        fault.ready = run.now()
        fault.accepting = self.wait_healthy(fault.ready)
        self.probe_recovery(fault)

    def wait_healthy(self, ready: float) -> float | None:
        """The first moment the adapter's /health answers 200 after `ready` (None past the bound): the
        adapter takes requests again. A synthesis served (`probe_recovery`) adds the predictor's own time."""
        while self.run_.now() - ready < 3 * RECOVERY_BOUND_S:
            try:
                if requests.get(f"{self.run_.stack.url}/health", timeout=5).status_code == 200:
                    return self.run_.now()
            except requests.RequestException:
                pass
            time.sleep(0.05)
        return None

    def kill_during_upload(self) -> str:
        """kill -9 the adapter while it is receiving a voice upload (half the body sent); that upload
        was never acknowledged: no trace of it may remain."""
        stack = self.run_.stack
        assert stack.adapter is not None
        name = f"killed-{uuid.uuid4().hex[:8]}.wav"
        content = reference_clip(VOICE_SECONDS, seed=99)
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        conn = http.client.HTTPConnection("127.0.0.1", stack.adapter_port, timeout=30)
        try:
            conn.putrequest("POST", "/api/voices/upload")
            conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
            conn.putheader("Content-Length", str(len(head) + len(content) + len(tail)))
            conn.endheaders()
            conn.send(head + content[: len(content) // 2])
            time.sleep(0.2)  # the adapter is reading the body now
            stack.adapter.popen.kill()
            stack.adapter.popen.wait(30)
        finally:
            conn.close()
        with self.run_.lock:
            self.run_.killed_uploads.append(name)
        return f"killed during the upload of {name}"

    def probe_recovery(self, fault: Fault) -> None:
        """Plain requests of the probe's own until one succeeds (for at most three times the bound); a
        client's synthesis that succeeds earlier counts too (`settle_recoveries`)."""
        body: dict[str, Any] = {"text": "Recovery probe.", "model": "turbo", "voice": {"max_new_tokens": 2, "seed": 1}}
        while self.run_.now() - fault.ready < 3 * RECOVERY_BOUND_S:
            sent = self.run_.now()
            try:
                response = requests.post(f"{self.run_.stack.url}/api/tts", json=body, timeout=REQUEST_DEADLINE_S)
                if response.status_code == 200:
                    fault.recovered, fault.served = sent, self.run_.now()
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)


class RssSampler(threading.Thread):
    def __init__(self, run: Run):
        super().__init__(name="chaos-rss", daemon=True)
        self.run_ = run

    def run(self) -> None:
        while not self.run_.stopping.wait(RSS_EVERY_S):
            predictor, adapter = self.run_.stack.rss_mib()
            self.run_.rss.append({"t": round(self.run_.now(), 2), "predictor_mib": predictor, "adapter_mib": adapter})


# ------------------------------------------------------------------------------------------ the run


@dataclass
class ChaosReport:
    config: ChaosConfig
    seconds: float
    outcomes: list[Outcome]
    faults: list[Fault]
    rss: list[dict]
    uploads: int
    folder_problems: list[str]
    default_problems: list[str]
    rss_figures: dict[str, dict]
    breaches: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def run_chaos(config: ChaosConfig, progress=lambda line: None) -> ChaosReport:
    config.out.mkdir(parents=True, exist_ok=True)
    plan = schedule(config)
    with tempfile.TemporaryDirectory(prefix="chatterbox-chaos-") as folder:
        voices_dir, log_dir = Path(folder) / "voices", Path(folder) / "logs"
        voices_dir.mkdir()
        log_dir.mkdir()
        write_reference_wav(voices_dir / "alice.wav", seconds=VOICE_SECONDS, seed=1)
        stack = Stack(config, voices_dir, log_dir)
        try:
            stack.start_predictor()
            stack.start_adapter()
            progress(f"chaos: stack ready; {len(plan)} faults planned: " + ", ".join(f.kind for f in plan))
            run = Run(config, stack)
            clients = [Client(run, number) for number in range(config.clients)]
            injector = Injector(run, plan)
            sampler = RssSampler(run)
            for thread in (*clients, injector, sampler):
                thread.start()
            last_report = 0.0
            quiet_since: float | None = None  # when the injector finished: the end's RSS window follows it
            while not run.stopping.is_set():
                if quiet_since is None and not injector.is_alive():
                    quiet_since = run.now()
                if run.now() >= config.duration_s and quiet_since is not None and run.now() - quiet_since >= 15:
                    break
                if run.now() - last_report >= 30:
                    last_report = run.now()
                    counts = Counter(o.category for o in list(run.outcomes))
                    progress(f"  {run.now():.0f} s: {len(run.faults)}/{len(plan)} faults, {dict(counts)}")
                time.sleep(0.5)
            run.stopping.set()
            injector.join(REQUEST_DEADLINE_S)
            for client in clients:
                client.join(REQUEST_DEADLINE_S + 10)
            if injector.error is not None:
                raise RuntimeError(f"the injector failed: {injector.error}\n{stack.log_tails()}")
            settle_recoveries(run.faults, run.outcomes)
            seconds = run.now()
        finally:
            stack.stop()
        folder_problems = check_folder(voices_dir, run.uploads, run.killed_uploads)
        end_default = check_default(voices_dir)
        default_problems = run.default_problems + ([f"at the end: {end_default}"] if end_default else [])
    report = ChaosReport(
        config=config,
        seconds=seconds,
        outcomes=run.outcomes,
        faults=run.faults,
        rss=run.rss,
        uploads=len(run.uploads),
        folder_problems=folder_problems,
        default_problems=default_problems,
        rss_figures=rss_figures(run.rss, run.faults, config),
    )
    report.breaches = breaches(report, plan)
    report.files = write_outputs(report)
    return report


def settle_recoveries(faults: list[Fault], outcomes: list[Outcome]) -> None:
    """Each fault's recovery from the syntheses that succeeded after the faulted process was ready
    again, the probe's or the clients': `recovered`, the earliest sent (one in flight at `ready`, e.g. a
    stream that waited through a freeze, counts from `ready`); `served`, the earliest last byte."""
    for fault in faults:
        good = [o for o in outcomes if o.kind in SYNTHESIS_KINDS and o.category == "ok" and o.end >= fault.ready]
        sent = min((max(o.start, fault.ready) for o in good), default=None)
        served = min((o.end for o in good), default=None)
        if sent is not None and (fault.recovered is None or sent < fault.recovered):
            fault.recovered = sent
        if served is not None and (fault.served is None or served < fault.served):
            fault.served = served


def check_folder(voices_dir: Path, uploads: dict[str, int], killed: list[str]) -> list[str]:
    """Every acknowledged upload is there, whole; every voice file decodes; nothing partial or hidden
    is left (the default-voice file aside), and no upload cut by a kill -9 appears."""
    problems = []
    for name, frames in uploads.items():
        try:
            got = sf.info(str(voices_dir / name)).frames
        except (RuntimeError, OSError) as exc:
            problems.append(f"acknowledged upload {name} does not decode: {exc}")
            continue
        if got != frames:
            problems.append(f"acknowledged upload {name} has {got} frames, {frames} were sent")
    for path in sorted(voices_dir.iterdir()):
        if path.name == DEFAULT_FILE:
            continue
        if path.name.startswith((".", TEMP_PREFIX)):
            problems.append(f"left in the voice folder: {path.name}")
        elif path.name in killed:
            problems.append(f"an upload cut by kill -9 was kept: {path.name}")
        else:
            try:
                sf.info(str(path))
            except (RuntimeError, OSError) as exc:
                problems.append(f"{path.name} does not decode: {exc}")
    return problems


# RSS windows: a minute of samples, as a busy predictor's RSS moves by a hundred MiB within seconds (its
# voice cache turning over, allocator pools growing and shrinking with the batch).
RSS_WINDOW_S = 60.0


def rss_figures(samples: list[dict], faults: list[Fault], config: ChaosConfig) -> dict[str, dict]:
    """Per process: the plateau (median of the first RSS_WINDOW_S after the warm-up), the end (median of
    the last RSS_WINDOW_S) and the growth between, against the bound; the peak beside them. Samples taken
    during a fault are left out (a predictor loading its models holds its weights twice for a while). A
    restarted process starts from the same state, so a plateau holds across restarts too; the memory
    soak (`make soak`) is the leak test of one long life."""
    windows = [(f.injected, f.served if f.served is not None else f.ready) for f in faults]
    figures: dict[str, dict] = {}
    for name in ("predictor", "adapter"):
        every = [(s["t"], s[f"{name}_mib"]) for s in samples if s[f"{name}_mib"] is not None]
        steady = [(t, v) for t, v in every if not any(a <= t <= b for a, b in windows)]
        if not steady:
            continue
        plateau = [v for t, v in steady if config.warmup_s <= t <= config.warmup_s + RSS_WINDOW_S]
        last = [v for t, v in steady if t >= steady[-1][0] - RSS_WINDOW_S]
        if not plateau:
            continue
        figures[name] = {
            "plateau_mib": round(statistics.median(plateau), 1),
            "end_mib": round(statistics.median(last), 1),
            "peak_mib": round(max(v for _, v in every), 1),
            "growth_mib": round(statistics.median(last) - statistics.median(plateau), 1),
            "bound_mib": config.rss_bound_mib,
        }
    return figures


def breaches(report: ChaosReport, plan: list[Fault]) -> list[str]:
    found = [
        f"{o.kind} by client {o.client} at {o.start:.1f}-{o.end:.1f} s: {o.detail}"
        for o in report.outcomes
        if o.category == "breach"
    ]
    found += report.folder_problems + report.default_problems
    for fault in report.faults:
        if fault.recovery_s is None:
            found.append(f"{fault.kind} at {fault.injected:.1f} s: requests did not succeed again")
        elif fault.recovery_s > RECOVERY_BOUND_S:
            found.append(f"{fault.kind} at {fault.injected:.1f} s: recovered in {fault.recovery_s:.1f} s")
    for name in ("predictor", "adapter"):
        if name not in report.rss_figures:
            found.append(f"{name}: no RSS samples after the warm-up")
    missing = set(FAULT_KINDS) - {f.kind for f in report.faults if f.recovered is not None}
    if missing:
        found.append(f"fault kinds not injected and recovered from: {sorted(missing)}")
    for name, figs in report.rss_figures.items():
        if figs["growth_mib"] > figs["bound_mib"]:
            found.append(f"{name} RSS grew {figs['growth_mib']} MiB after the warm-up (bound {figs['bound_mib']})")
    if not any(o.category == "ok" for o in report.outcomes):
        found.append("no request succeeded")
    return found


CATEGORIES = ("ok", "refused", "error", "cut", "down", "breach")
COLOURS = {"ok": "tab:green", "refused": "tab:orange", "error": "tab:purple", "cut": "tab:brown", "down": "grey"}
COLOURS["breach"] = "red"
FAULT_COLOURS = dict(zip(FAULT_KINDS, ("tab:red", "tab:blue", "tab:olive", "tab:cyan", "tab:pink"), strict=True))


def summary(report: ChaosReport) -> dict:
    outcomes = Counter(o.category for o in report.outcomes)
    by_kind: dict[str, dict[str, int]] = {}
    for o in report.outcomes:
        by_kind.setdefault(o.kind, Counter())[o.category] += 1
    recoveries = [f.recovery_s for f in report.faults if f.recovery_s is not None]
    accepting = [f.accepting_s for f in report.faults if f.accepting_s is not None]
    served = [f.served_s for f in report.faults if f.served_s is not None]
    return {
        "seconds": round(report.seconds, 1),
        "requests": len(report.outcomes),
        "outcomes": dict(outcomes),
        "by_kind": {k: dict(v) for k, v in by_kind.items()},
        "faults": dict(Counter(f.kind for f in report.faults)),
        "recovery_s": {
            "count": len(recoveries),
            "median": round(statistics.median(recoveries), 2) if recoveries else None,
            "max": round(max(recoveries), 2) if recoveries else None,
            "bound": RECOVERY_BOUND_S,
        },
        "accepting_s": {
            "median": round(statistics.median(accepting), 2) if accepting else None,
            "max": round(max(accepting), 2) if accepting else None,
        },
        "served_s": {
            "median": round(statistics.median(served), 2) if served else None,
            "max": round(max(served), 2) if served else None,
        },
        "uploads_acknowledged": report.uploads,
        "rss": report.rss_figures,
        "breaches": report.breaches,
    }


def markdown(report: ChaosReport) -> str:
    s = summary(report)
    config = report.config
    lines = [
        f"Chaos soak: {s['seconds']:.0f} s, {config.clients} clients, seed {config.seed}, turbo on random weights, "
        f"max_new_tokens={config.max_new_tokens}.",
        "",
        "| requests | " + " | ".join(CATEGORIES) + " |",
        "|---|" + "---|" * len(CATEGORIES),
        f"| {s['requests']} | " + " | ".join(str(s["outcomes"].get(c, 0)) for c in CATEGORIES) + " |",
        "",
        "| request kind | " + " | ".join(CATEGORIES) + " |",
        "|---|" + "---|" * len(CATEGORIES),
    ]
    for kind in REQUEST_KINDS:
        counts = s["by_kind"].get(kind, {})
        lines.append(f"| {kind} | " + " | ".join(str(counts.get(c, 0)) for c in CATEGORIES) + " |")
    lines += [
        "",
        "| fault | at (s) | ready again (s) | /health 200 after (s) | a synthesis that succeeds sent after (s) "
        "| its last byte after (s) | note |",
        "|---|---|---|---|---|---|---|",
    ]

    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.2f}"

    for f in report.faults:
        stop = f" (stopped {f.stop_s:g} s)" if f.kind == "predictor-stop" else ""
        lines.append(
            f"| {f.kind}{stop} | {f.injected:.1f} | {f.ready:.1f} | {seconds(f.accepting_s)} "
            f"| {seconds(f.recovery_s)} | {seconds(f.served_s)} | {f.note} |"
        )
    r, a, v = s["recovery_s"], s["accepting_s"], s["served_s"]
    lines += [
        "",
        f"Recovery, from the faulted process ready again until a synthesis sent then succeeds: median "
        f"{r['median']} s, max {r['max']} s (bound {r['bound']:g} s), over {r['count']} faults. The adapter's "
        f"/health was 200 again after a median {a['median']} s (max {a['max']} s); the first synthesis ended "
        f"after a median {v['median']} s (max {v['max']} s): a restarted predictor's first synthesis is cold.",
        "",
        f"| process | RSS plateau MiB (first {RSS_WINDOW_S:g} s after warm-up) | end MiB (last {RSS_WINDOW_S:g} s) "
        "| growth MiB | peak MiB | bound MiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, figs in s["rss"].items():
        lines.append(
            f"| {name} | {figs['plateau_mib']} | {figs['end_mib']} | {figs['growth_mib']:+} "
            f"| {figs['peak_mib']} | {figs['bound_mib']:g} |"
        )
    lines += ["", f"Acknowledged uploads: {s['uploads_acknowledged']}, all complete and decodable afterwards."]
    lines += ["", "Breaches: " + ("none" if not s["breaches"] else "\n- " + "\n- ".join(s["breaches"]))]
    return "\n".join(lines) + "\n"


def write_outputs(report: ChaosReport) -> list[Path]:
    stem = report.config.out / f"chaos-{report.config.seed}"
    json_path, md_path, png_path = stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")
    config = {**asdict(report.config), "weights": str(report.config.weights), "out": str(report.config.out)}
    data = {
        "config": config,
        "summary": summary(report),
        "faults": [
            {**asdict(f), "recovery_s": f.recovery_s, "served_s": f.served_s, "accepting_s": f.accepting_s}
            for f in report.faults
        ],
        "outcomes": [asdict(o) for o in report.outcomes],
        "rss": report.rss,
    }
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    md_path.write_text(markdown(report))
    plot(report, png_path)
    return [json_path, md_path, png_path]


def plot(report: ChaosReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lanes, rss) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for axis in (lanes, rss):
        for fault in report.faults:
            end = fault.served if fault.served is not None else fault.ready
            axis.axvspan(fault.injected, end, color=FAULT_COLOURS[fault.kind], alpha=0.15, linewidth=0)
    for fault in report.faults:
        lanes.text(fault.injected, len(CATEGORIES) - 0.4, fault.kind, rotation=90, fontsize=7, va="top")
    for index, category in enumerate(CATEGORIES):
        chosen = [o for o in report.outcomes if o.category == category]
        if chosen:
            lanes.hlines(
                [index + (o.client - report.config.clients / 2) * 0.08 for o in chosen],
                [o.start for o in chosen],
                [o.end for o in chosen],
                colors=COLOURS[category],
                linewidth=1.5,
            )
            # A marker at each end: refusals take milliseconds, too short for a visible line.
            lanes.scatter(
                [o.end for o in chosen],
                [index + (o.client - report.config.clients / 2) * 0.08 for o in chosen],
                s=8,
                color=COLOURS[category],
                label=f"{category} ({len(chosen)})",
            )
    lanes.set_yticks(range(len(CATEGORIES)), CATEGORIES)
    lanes.set_ylim(-0.5, len(CATEGORIES) + 0.5)
    lanes.set_ylabel("outcome (one line per request)")
    lanes.legend(loc="upper left", fontsize=8, ncols=len(CATEGORIES))
    lanes.grid(alpha=0.3)
    times = [s["t"] for s in report.rss]
    for name, colour in (("predictor", "tab:blue"), ("adapter", "tab:orange")):
        rss.plot(times, [s[f"{name}_mib"] for s in report.rss], color=colour, linewidth=1, label=f"{name} RSS")
    rss.set_ylabel("RSS (MiB)")
    rss.set_xlabel("seconds (shaded: a fault, from injection to the first request served after it)")
    rss.legend(loc="upper left", fontsize=8)
    rss.grid(alpha=0.3)
    s = summary(report)
    verdict = "no breach" if not report.breaches else f"{len(report.breaches)} BREACHES"
    fig.suptitle(
        f"Chaos soak: {s['requests']} requests from {report.config.clients} clients, "
        f"{len(report.faults)} faults, {verdict}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--clients", type=int, default=3, help="concurrent clients (default 3)")
    parser.add_argument("--seed", type=int, default=23, help="seed of the fault schedule and of the load")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="speech tokens per request")
    parser.add_argument("--weights", type=Path, default=ROOT / "build" / "random-weights")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "chaos")
    args = parser.parse_args(argv)
    config = ChaosConfig(
        duration_s=args.duration,
        clients=args.clients,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        weights=args.weights,
        out=args.out,
    )
    report = run_chaos(config, progress=lambda line: print(line, flush=True))
    print()
    print(markdown(report))
    print("\n".join(f"wrote {path}" for path in report.files))
    return 1 if report.breaches else 0


if __name__ == "__main__":
    sys.exit(main())
