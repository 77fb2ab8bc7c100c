"""One thread for all of the predictor's torch work: loading, voice preparation and generation.

Why one: on CPU, torch's intra-op parallelism is OpenMP (libgomp), which keeps a pool of worker
threads for every thread that runs a parallel region. Once the pools together hold more threads
than there are CPUs, libgomp stops letting idle workers spin and puts them to sleep after each
region, and every one of the thousands of small regions of a token-by-token decode then pays a
wake-up. Measured on 2 cores with turbo: 10% slower when loading ran on the main thread and requests
on asyncio's worker threads, and the same as upstream's single-threaded generate() with one thread.

Requests still take turns: each submits one bounded step at a time (see ChatterboxEngine.steps),
and the queue is first come, first served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class TorchThread:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch")

    def call(self, fn: Callable[..., T], *args) -> T:
        """Run `fn` on the torch thread and wait for it (start-up, before the event loop)."""
        return self._executor.submit(fn, *args).result()

    def submit(self, fn: Callable[..., T], *args) -> Future:
        """Queue `fn` behind everything already queued; nothing waits for it."""
        return self._executor.submit(fn, *args)

    def run(self, fn: Callable[..., T], *args) -> asyncio.Future:
        """Run `fn` on the torch thread; await the result from the event loop."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
