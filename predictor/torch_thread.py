"""One thread for all of the predictor's torch work: loading, voice preparation and generation.

Why one: on CPU, torch's intra-op parallelism is OpenMP (libgomp), which keeps a pool of worker
threads for every thread that runs a parallel region. Once the pools together hold more threads
than there are CPUs, libgomp stops letting idle workers spin and puts them to sleep after each
region, and every one of the thousands of small regions of a token-by-token decode then pays a
wake-up. Measured on 2 cores with turbo: 10% slower when loading ran on the main thread and requests
on asyncio's worker threads, and the same as upstream's single-threaded generate() with one thread.

The thread runs queued jobs (first come, first served) and, while requests are active, the
scheduler's ticks (engine/scheduler.py): one job, then one tick, so that neither starves the other.
Requests run as greenlets on this same thread, so there is still one OpenMP pool.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

import torch

T = TypeVar("T")
JOB_ROUND_S = 0.02  # queued jobs run back to back between two ticks for at most this long
logger = logging.getLogger(__name__)


class TorchThread:
    def __init__(self, on_idle: Callable[[], object] | None = None) -> None:
        """`on_idle()` runs each time the thread has done some work and is about to wait for more."""
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._tick: Callable[[], bool] | None = None
        self._on_idle = on_idle
        self._thread = threading.Thread(target=self._loop, name="torch", daemon=True)
        self._thread.start()

    def set_ticker(self, tick: Callable[[], bool]) -> None:
        """`tick()` runs between jobs for as long as it returns True (it has work left); a job that
        gives it work must return only once the work is registered, so the loop sees it."""
        self._tick = tick

    def call(self, fn: Callable[..., T], *args) -> T:
        """Run `fn` on the torch thread and wait for it (start-up, before the event loop)."""
        return self.submit(fn, *args).result()

    def submit(self, fn: Callable[..., T], *args) -> Future:
        """Queue `fn` behind everything already queued; nothing waits for it."""
        future: Future = Future()
        self._jobs.put((future, fn, args))
        return future

    def run(self, fn: Callable[..., T], *args) -> asyncio.Future:
        """Run `fn` on the torch thread; await the result from the event loop."""
        return asyncio.wrap_future(self.submit(fn, *args))

    def _next_job_within(self, started: float) -> tuple | None:
        """Another queued job while this round of jobs has taken less than JOB_ROUND_S: a burst of
        requests then starts in one tick (each start is a quick job), so their T3 rows join the batch
        together and their chunk boundaries, and flow passes, coincide. One job per tick started
        eight concurrent requests eight ticks apart, and their first and last chunks each paid a
        flow pass of their own (docs/benchmarks.md, "Bar F-1 after bursts start in one tick"). A long job (a voice's preparation) still
        gives the next tick its turn as soon as it ends."""
        if time.monotonic() - started >= JOB_ROUND_S:
            return None
        try:
            return self._jobs.get_nowait()
        except queue.Empty:
            return None

    def _loop(self) -> None:
        busy = False
        worked = False
        while True:
            if worked and not busy and self._jobs.empty() and self._on_idle is not None:
                worked = False
                try:
                    self._on_idle()
                except Exception:
                    logger.exception("idle hook failed")
            try:
                job = self._jobs.get(block=not busy)
            except queue.Empty:
                job = None
            started = time.monotonic()
            while job is not None:
                worked = True
                future, fn, args = job
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:
                        future.set_exception(exc)
                job = self._next_job_within(started)
            if self._tick is not None:
                # Inference mode around the whole tick: tasks switch in the middle of their own
                # inference-mode blocks, and must all find the same mode.
                try:
                    with torch.inference_mode():
                        busy = self._tick()
                except Exception:  # a scheduler bug must not stop the thread every request depends on
                    logger.exception("scheduler tick failed")
