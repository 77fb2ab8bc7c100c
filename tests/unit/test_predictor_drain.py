"""The predictor's drain (predictor/shutdown.py) on the service with a test double of the engine:
new work is refused with 503 once draining, work in flight runs to the end within the bound, and
past the bound a stream ends at its next step with a 503 saying the server is shutting down.
(The real predictor process under SIGTERM: tests/e2e/test_shutdown.py.)"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from contract.errors import ServiceError
from predictor.service import SynthesisService
from predictor.torch_thread import TorchThread
from tests.unit.test_service_units import StepEngine


async def _drained(service: SynthesisService, stream_steps_seen: list, stream) -> list[int]:
    handed_over: list[int] = []
    service.drain.begin(signal.SIGTERM, lambda signum, frame: handed_over.append(signum))
    with pytest.raises(ServiceError) as refused:
        await anext(service.stream("turbo", "new", {}))
    assert refused.value.status == 503 and "shutting down" in refused.value.message
    async for chunk in stream:
        stream_steps_seen.append(chunk.index)
    for _ in range(200):
        if handed_over:
            break
        await asyncio.sleep(0.01)
    return handed_over


def test_work_in_flight_finishes_and_new_work_is_refused_while_draining():
    service = SynthesisService(StepEngine(steps=5), 2, TorchThread(), drain_timeout_s=30)

    async def scenario():
        stream = service.stream("turbo", "running", {})
        seen = [(await anext(stream)).index]
        handed_over = await _drained(service, seen, stream)
        return seen, handed_over

    seen, handed_over = asyncio.run(scenario())
    assert seen == [0, 1, 2, 3, 4]  # every chunk, to the end
    assert handed_over == [signal.SIGTERM] and not service.drain.expired


ENDLESS = 10_000_000  # steps no machine runs within the bound below


def test_past_the_bound_a_stream_ends_with_a_shutting_down_error():
    # A whole second, so that a stall of the machine cannot cut the stream before its second chunk.
    service = SynthesisService(StepEngine(steps=ENDLESS), 2, TorchThread(), drain_timeout_s=1.0)

    async def scenario():
        stream = service.stream("turbo", "endless", {})
        seen = [(await anext(stream)).index]
        with pytest.raises(ServiceError) as cut:
            await _drained(service, seen, stream)
        return seen, cut.value

    seen, error = asyncio.run(scenario())
    assert error.status == 503 and "DRAIN_TIMEOUT_S" in error.message
    assert 1 < len(seen) < ENDLESS and service.drain.expired
    # The slot frees once the task is also gone from the torch thread, a moment after the stream ends.
    for _ in range(200):
        if service._in_flight == 0:
            break
        time.sleep(0.01)
    assert service._in_flight == 0
