"""The predictor, seen over the network: readiness, server info and the SSE audio stream."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import NamedTuple

import httpx
import numpy as np

from adapter.breaker import WATCH_TIMEOUT_S, Breaker, PredictorUnavailable
from adapter.discovery import PredictorLocator, StaticLocator
from contract.errors import ServiceError
from contract.stream import (
    MEDIA_TYPE,
    STREAM_PATH,
    ChunkEvent,
    DoneEvent,
    EventReader,
    GenerateStreamRequest,
    StreamProtocolError,
)

log = logging.getLogger("adapter.predictor")

__all__ = ["AudioStream", "PredictorClient", "PredictorUnavailable", "StreamedAudio"]

# Health checks must answer quickly even when generation timeouts are long.
_PROBE_TIMEOUT_S = 5.0


def _relay_status(upstream: int) -> int:
    # The predictor's client errors are the caller's errors; its own failures are a bad gateway.
    if 400 <= upstream < 500 or upstream == 503:
        return upstream
    return 502


def _error_message(response: httpx.Response, body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        err = payload.get("error", payload.get("detail"))
        if isinstance(err, dict):
            err = err.get("message")
        if isinstance(err, str) and err:
            return err
    text = body.decode("utf-8", "replace").strip()[:300]
    return text or f"predictor answered HTTP {response.status_code}"


class StreamedAudio(NamedTuple):
    samples: np.ndarray  # float32 mono at 24 kHz
    final: bool  # nothing follows: exactly one chunk of a complete stream says so


class StreamBounds(NamedTuple):
    """How long a started call may wait on the predictor (FIRST_CHUNK_TIMEOUT_S, CHUNK_GAP_TIMEOUT_S)."""

    first_chunk_s: float  # from the call to its first audio chunk (the predictor's headers come with it)
    chunk_gap_s: float  # between two chunks


class AudioStream:
    """One generate_stream call. Iterate for StreamedAudio; `aclose()` cancels it upstream.
    Failures are ServiceError with the status the adapter's client should see."""

    def __init__(self, response: httpx.Response, breaker: Breaker, bounds: StreamBounds, first_deadline: float):
        self._response = response
        self._breaker = breaker
        self._bounds = bounds
        self._deadline = first_deadline  # loop time by which the next chunk must have come
        self.done: DoneEvent | None = None
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[StreamedAudio]:
        loop = asyncio.get_running_loop()
        try:
            final_seen = False
            chunks = 0
            reader = EventReader()
            lines = self._response.aiter_lines()
            while True:
                try:
                    async with asyncio.timeout_at(self._deadline):
                        line = await anext(lines, None)
                except TimeoutError:
                    raise self._silence(chunks) from None
                if line is None:
                    break
                event = reader.feed(line)
                if isinstance(event, ChunkEvent):
                    chunks += 1
                    self._breaker.answered()
                    self._deadline = loop.time() + self._bounds.chunk_gap_s
                    final_seen = event.final
                    yield StreamedAudio(event.samples(), final_seen)
                elif isinstance(event, DoneEvent):
                    self.done = event
                    if not final_seen:  # a predictor that does not flag its last chunk
                        yield StreamedAudio(np.zeros(0, dtype=np.float32), True)
                    return
                elif event is not None:  # ErrorEvent
                    raise ServiceError(_relay_status(event.code), event.message or "generation failed")
        except StreamProtocolError as exc:
            raise ServiceError(502, f"predictor sent a malformed stream event: {exc}") from None
        except httpx.TimeoutException:
            self._breaker.failed("a stream sent nothing for PREDICTOR_TIMEOUT_S")
            raise ServiceError(504, "predictor timed out while generating (PREDICTOR_TIMEOUT_S)") from None
        except httpx.TransportError as exc:
            self._breaker.failed(f"a stream broke off ({exc.__class__.__name__})")
            raise ServiceError(502, f"predictor stream broke off ({exc.__class__.__name__})") from None
        finally:
            await self.aclose()
        if self.done is None:
            raise ServiceError(502, "predictor stream ended without a done event")

    def _silence(self, chunks: int) -> ServiceError:
        if chunks:
            setting, seconds, what = "CHUNK_GAP_TIMEOUT_S", self._bounds.chunk_gap_s, "its next audio chunk"
        else:
            setting, seconds, what = "FIRST_CHUNK_TIMEOUT_S", self._bounds.first_chunk_s, "any audio"
        self._breaker.failed(f"a stream sent nothing for {seconds:g} s")
        return ServiceError(504, f"predictor sent {what} within {seconds:g} s ({setting})")

    async def aclose(self) -> None:
        # Closing an unfinished streaming response drops the connection, which is how the
        # predictor learns that nobody is listening and stops generating.
        if not self._closed:
            self._closed = True
            await self._response.aclose()


class PredictorClient:
    """`predictor`: a base URL (PREDICTOR_URL) or a locator that discovers it (adapter/discovery.py).
    `bounds`: FIRST_CHUNK_TIMEOUT_S and CHUNK_GAP_TIMEOUT_S; by default only `timeout_s` bounds a wait.
    Every call goes through the breaker (adapter/breaker.py): refused at once while it is open."""

    def __init__(
        self,
        predictor: str | PredictorLocator,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        bounds: StreamBounds | None = None,
    ):
        self._locator = StaticLocator(predictor) if isinstance(predictor, str) else predictor
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            transport=transport,
        )
        self._bounds = bounds or StreamBounds(timeout_s, timeout_s)
        self.breaker = Breaker(self._watch_probe)

    async def aclose(self) -> None:
        await self.breaker.aclose()
        await self._client.aclose()
        await self._locator.aclose()

    async def _base_url(self, require_ready: bool) -> str:
        """Where to send a request; PredictorUnavailable when discovery knows of no usable predictor."""
        location = await self._locator.locate()
        if location.url is None or (require_ready and location.ready is False):
            raise PredictorUnavailable(location.problem or "the predictor's address is unknown")
        return location.url

    def _admit(self) -> None:
        """Every call: refused at once while the predictor is known not to answer."""
        self.breaker.check()

    def _unanswered(self, exc: httpx.HTTPError) -> None:
        """A call got no answer: a new address may help (discovery), and the breaker opens."""
        self._locator.invalidate()
        name = exc.__class__.__name__
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            cause = f"unreachable: {name}"
        elif isinstance(exc, httpx.TimeoutException):
            cause = f"no answer in time: {name}"
        else:
            cause = f"the connection broke off: {name}"
        self.breaker.failed(cause)

    async def _watch_probe(self) -> None:
        try:
            base = await self._base_url(require_ready=False)
        except PredictorUnavailable:
            return  # no address to probe: discovery's own answer (503, its reason) stands
        try:
            await self._client.get(f"{base}/v2/health/ready", timeout=WATCH_TIMEOUT_S)
        except httpx.TimeoutException:
            self.breaker.failed(f"a health probe got no answer within {WATCH_TIMEOUT_S:g} s")
        except httpx.HTTPError as exc:
            self._unanswered(exc)
        else:
            self.breaker.answered()

    async def ready(self) -> bool:
        try:
            self._admit()
            base = await self._base_url(require_ready=True)
            response = await self.breaker.unless_opened(
                self._client.get(f"{base}/v2/health/ready", timeout=_PROBE_TIMEOUT_S)
            )
        except PredictorUnavailable:
            return False
        except httpx.HTTPError as exc:
            self._unanswered(exc)
            return False
        self.breaker.answered()
        return response.status_code == 200

    async def info(self) -> dict:
        """The predictor's /v2/chatterbox/info; raises PredictorUnavailable when it cannot answer
        (or, with discovery, when the InferenceService is missing or not Ready)."""
        self._admit()
        base = await self._base_url(require_ready=True)
        try:
            response = await self.breaker.unless_opened(
                self._client.get(f"{base}/v2/chatterbox/info", timeout=_PROBE_TIMEOUT_S)
            )
        except httpx.HTTPError as exc:
            self._unanswered(exc)
            raise PredictorUnavailable(f"predictor is unreachable ({exc.__class__.__name__})") from None
        self.breaker.answered()
        if response.status_code != 200:
            raise PredictorUnavailable(f"predictor info answered HTTP {response.status_code}")
        try:
            info = response.json()
        except ValueError:
            raise PredictorUnavailable("predictor info is not JSON") from None
        if not isinstance(info, dict):
            raise PredictorUnavailable("predictor info is not an object")
        return info

    async def open_stream(self, model: str, text: str, parameters: dict, incremental: bool = True) -> AudioStream:
        """Start a generation; errors before the first chunk raise ServiceError with a relayable status.
        `incremental=False`: one chunk per text piece, upstream-exact and cheaper, for callers that wait anyway."""
        self._admit()
        first_deadline = asyncio.get_running_loop().time() + self._bounds.first_chunk_s
        body = GenerateStreamRequest(text_input=text, parameters=parameters, incremental=incremental).model_dump(
            exclude_none=True
        )
        # A known address is used even if the InferenceService is not Ready: the predictor has the last word.
        base = await self._base_url(require_ready=False)
        request = self._client.build_request(
            "POST", base + STREAM_PATH.format(model=model), json=body, headers={"Accept": MEDIA_TYPE}
        )
        try:
            # The predictor sends its headers with the first chunk: this wait is part of the first chunk's.
            async with asyncio.timeout_at(first_deadline):
                response = await self._client.send(request, stream=True)
        except TimeoutError:
            seconds = self._bounds.first_chunk_s
            self.breaker.failed(f"a call got no answer within {seconds:g} s")
            raise ServiceError(504, f"predictor sent no audio within {seconds:g} s (FIRST_CHUNK_TIMEOUT_S)") from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._unanswered(exc)
            raise PredictorUnavailable(f"predictor is unreachable ({exc.__class__.__name__})") from None
        except httpx.TimeoutException as exc:
            self._unanswered(exc)
            raise ServiceError(504, "predictor did not answer within PREDICTOR_TIMEOUT_S") from None
        except httpx.HTTPError as exc:
            self._unanswered(exc)
            raise PredictorUnavailable(f"predictor is unreachable ({exc.__class__.__name__})") from None
        self.breaker.answered()
        if response.status_code != 200:
            try:
                body_bytes = await response.aread()
            except httpx.HTTPError:
                body_bytes = b""
            finally:
                await response.aclose()
            message = _error_message(response, body_bytes)
            log.info("predictor refused generation: HTTP %s %s", response.status_code, message)
            raise ServiceError(_relay_status(response.status_code), message)
        return AudioStream(response, self.breaker, self._bounds, first_deadline)
