"""SynthesisService on a test double of the engine: every engine call runs on the one torch thread,
requests run as scheduler tasks that take turns at their switch points, and an interrupted request
is stopped there before its slot frees.
(The real engine behind the real server is tested in test_predictor_v2 and test_end_to_end.)"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from contract.errors import ServiceError
from predictor.engine import tasks
from predictor.engine.engine import AudioChunk
from predictor.service import SynthesisService
from predictor.torch_thread import JOB_ROUND_S, TorchThread

ROOT = Path(__file__).resolve().parents[2]


class StepEngine:
    """Three chunks per request, each after a slice point; records which thread ran what."""

    def __init__(self, steps: int = 3):
        self.variants = {"turbo": SimpleNamespace(batch=[], s3gen_calls=())}  # no T3 batch or S3Gen call to run
        self.settings = SimpleNamespace(voices_dir="/nonexistent")
        self.steps_per_request = steps
        self.threads: set[str] = set()
        self.log: list[tuple[str, int]] = []
        self.closed: list[str] = []

    def prepare(self, variant, text, params, voice):
        self.threads.add(threading.current_thread().name)
        return SimpleNamespace(name=text, seed=0)

    def chunks(self, request, cancelled, stream):
        try:
            for i in range(self.steps_per_request):
                if cancelled():
                    return
                self.threads.add(threading.current_thread().name)
                self.log.append((request.name, i))
                tasks.pause()
                yield AudioChunk(
                    samples=np.full(4, i, dtype=np.float32),
                    index=i,
                    speech_tokens=1,
                    final=i == self.steps_per_request - 1,
                )
        finally:
            self.closed.append(request.name)


async def collect(service: SynthesisService, text: str) -> list[int]:
    return [chunk.index async for chunk in service.stream("turbo", text, {})]


def test_every_engine_call_runs_on_the_torch_thread():
    engine = StepEngine()
    service = SynthesisService(engine, 2, TorchThread())
    assert asyncio.run(collect(service, "a")) == [0, 1, 2]
    assert len(engine.threads) == 1 and next(iter(engine.threads)).startswith("torch")
    assert service._in_flight == 0


def test_concurrent_requests_take_turns_slice_by_slice():
    engine = StepEngine(steps=4)
    service = SynthesisService(engine, 2, TorchThread())

    async def both():
        return await asyncio.gather(collect(service, "a"), collect(service, "b"))

    assert asyncio.run(both()) == [[0, 1, 2, 3], [0, 1, 2, 3]]
    order = [name for name, _ in engine.log]
    # Neither request ran all its steps before the other started.
    assert order.index("b") < len(order) - order[::-1].index("a") - 1


def test_a_full_service_answers_429_and_an_abandoned_stream_frees_its_slot():
    engine = StepEngine(steps=50)
    service = SynthesisService(engine, 1, TorchThread())

    async def scenario():
        stream = service.stream("turbo", "long", {})
        assert (await anext(stream)).index == 0
        with pytest.raises(ServiceError) as busy:
            await anext(service.stream("turbo", "other", {}))
        assert busy.value.status == 429
        await stream.aclose()  # the client went away
        for _ in range(200):
            if service._in_flight == 0:
                break
            await asyncio.sleep(0.01)
        return await collect(service, "next")

    assert asyncio.run(scenario())[:2] == [0, 1]
    assert "long" in engine.closed and service._in_flight == 0
    assert [i for name, i in engine.log if name == "long"][-1] < 49  # it stopped early


def test_the_idle_hook_runs_once_the_torch_thread_has_nothing_left():
    """RELEASE_HEAP_WHEN_IDLE: the heap is released after work, never while requests run."""
    engine = StepEngine(steps=5)
    idle_calls: list[int] = []
    torch_thread = TorchThread(on_idle=lambda: idle_calls.append(len(engine.log)))
    service = SynthesisService(engine, 2, torch_thread)

    async def both():
        return await asyncio.gather(collect(service, "a"), collect(service, "b"))

    assert asyncio.run(both()) == [[0, 1, 2, 3, 4]] * 2
    for _ in range(200):  # the hook runs after the last tick, on the torch thread
        if idle_calls and idle_calls[-1] == 10:
            break
        threading.Event().wait(0.01)
    assert idle_calls and idle_calls[-1] == 10, idle_calls
    assert all(count in (0, 10) for count in idle_calls), f"the hook ran mid-request: {idle_calls}"
    calls = len(idle_calls)
    threading.Event().wait(0.1)
    assert len(idle_calls) == calls, "an idle thread does not call the hook again"


def test_release_free_heap_gives_memory_back_on_glibc():
    import platform

    import psutil

    from predictor.heap import release_free_heap

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    process = psutil.Process()
    # Freed chunks below glibc's mmap threshold stay resident in the heap until trimmed; the last one
    # keeps the heap's top from shrinking on its own.
    chunks = [bytearray(64 * 1024) for _ in range(2048)]  # 128 MiB in 64 KiB pieces
    anchor = chunks.pop()
    del chunks
    before = process.memory_info().rss
    assert release_free_heap()
    freed = before - process.memory_info().rss
    del anchor
    assert freed > 64 * 1024 * 1024, f"only {freed / 2**20:.0f} MiB were given back"


# In a fresh interpreter (mallopt is process-wide): a 100 MiB buffer, then whether glibc mapped it on
# its own (mallinfo2's hblks counts the chunks served by mmap) rather than from the heap.
MAPPED_CHUNKS_AFTER_A_LARGE_BUFFER = """
import ctypes, sys
from predictor.heap import serve_large_buffers_from_heap
if sys.argv[1] == "heap":
    assert serve_large_buffers_from_heap()
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblks
buffer = libc.malloc(100 * 1024 * 1024)
print(libc.mallinfo2().hblks - before)
libc.free(ctypes.c_void_p(buffer))
"""


def test_heap_large_buffers_serves_a_100_mib_buffer_from_the_heap_on_glibc():
    """HEAP_LARGE_BUFFERS (predictor/heap.py): a buffer of the size a batched flow or HiFT pass frees and
    allocates at every op comes from the heap, where freed memory is reused, not from a fresh mapping."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")

    def mapped_chunks(mode: str) -> int:
        run = [sys.executable, "-c", MAPPED_CHUNKS_AFTER_A_LARGE_BUFFER, mode]
        return int(subprocess.run(run, check=True, capture_output=True, text=True, cwd=ROOT).stdout)

    assert mapped_chunks("default") == 1  # glibc's own choice: above its threshold, a mapping
    assert mapped_chunks("heap") == 0


def test_a_burst_of_quick_jobs_starts_between_two_ticks_and_a_slow_one_lets_a_tick_in():
    """Requests arriving together start in one tick, so their T3 rows join the batch together
    (torch_thread.py, `JOB_ROUND_S`); a slow job still gives the ticks their turn."""
    thread = TorchThread()
    ticks = [0]
    gate = threading.Event()

    def tick() -> bool:
        ticks[0] += 1
        gate.wait()  # the burst below is queued while this tick runs
        return ticks[0] < 1000

    seen: list[int] = []
    thread.set_ticker(tick)
    thread.submit(lambda: None)  # wakes the loop: it ticks from here on
    while ticks[0] == 0:
        pass
    burst = [thread.submit(lambda: seen.append(ticks[0])) for _ in range(6)]
    slow = thread.submit(lambda: (seen.append(ticks[0]), time.sleep(2 * JOB_ROUND_S)))
    after_slow = thread.submit(lambda: seen.append(ticks[0]))
    gate.set()
    for future in [*burst, slow, after_slow]:
        future.result(timeout=10)
    assert len(set(seen[:7])) == 1, seen  # the burst and the slow job: between the same two ticks
    assert seen[7] > seen[6], seen  # after the slow job, a tick ran before the next job
