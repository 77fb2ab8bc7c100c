"""The predictor, seen over the network: readiness, server info and the SSE audio stream."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import NamedTuple

import httpx
import numpy as np

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

# Health checks must answer quickly even when generation timeouts are long.
_PROBE_TIMEOUT_S = 5.0


class PredictorUnavailable(ServiceError):
    def __init__(self, message: str = "predictor is unavailable"):
        super().__init__(503, message)


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


class AudioStream:
    """One generate_stream call. Iterate for StreamedAudio; `aclose()` cancels it upstream.
    Failures are ServiceError with the status the adapter's client should see."""

    def __init__(self, response: httpx.Response):
        self._response = response
        self.done: DoneEvent | None = None
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[StreamedAudio]:
        try:
            final_seen = False
            reader = EventReader()
            async for line in self._response.aiter_lines():
                event = reader.feed(line)
                if isinstance(event, ChunkEvent):
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
            raise ServiceError(504, "predictor timed out while generating (PREDICTOR_TIMEOUT_S)") from None
        except httpx.TransportError as exc:
            raise ServiceError(502, f"predictor stream broke off ({exc.__class__.__name__})") from None
        finally:
            await self.aclose()
        if self.done is None:
            raise ServiceError(502, "predictor stream ended without a done event")

    async def aclose(self) -> None:
        # Closing an unfinished streaming response drops the connection, which is how the
        # predictor learns that nobody is listening and stops generating.
        if not self._closed:
            self._closed = True
            await self._response.aclose()


class PredictorClient:
    """`predictor`: a base URL (PREDICTOR_URL) or a locator that discovers it (adapter/discovery.py)."""

    def __init__(
        self, predictor: str | PredictorLocator, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None
    ):
        self._locator = StaticLocator(predictor) if isinstance(predictor, str) else predictor
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._locator.aclose()

    async def _base_url(self, require_ready: bool) -> str:
        """Where to send a request; PredictorUnavailable when discovery knows of no usable predictor."""
        location = await self._locator.locate()
        if location.url is None or (require_ready and location.ready is False):
            raise PredictorUnavailable(location.problem or "the predictor's address is unknown")
        return location.url

    async def ready(self) -> bool:
        try:
            base = await self._base_url(require_ready=True)
            response = await self._client.get(f"{base}/v2/health/ready", timeout=_PROBE_TIMEOUT_S)
        except PredictorUnavailable:
            return False
        except httpx.HTTPError:
            self._locator.invalidate()
            return False
        return response.status_code == 200

    async def info(self) -> dict:
        """The predictor's /v2/chatterbox/info; raises PredictorUnavailable when it cannot answer
        (or, with discovery, when the InferenceService is missing or not Ready)."""
        base = await self._base_url(require_ready=True)
        try:
            response = await self._client.get(f"{base}/v2/chatterbox/info", timeout=_PROBE_TIMEOUT_S)
        except httpx.HTTPError as exc:
            self._locator.invalidate()
            raise PredictorUnavailable(f"predictor is unreachable ({exc.__class__.__name__})") from None
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
        body = GenerateStreamRequest(text_input=text, parameters=parameters, incremental=incremental).model_dump(
            exclude_none=True
        )
        # A known address is used even if the InferenceService is not Ready: the predictor has the last word.
        base = await self._base_url(require_ready=False)
        request = self._client.build_request(
            "POST", base + STREAM_PATH.format(model=model), json=body, headers={"Accept": MEDIA_TYPE}
        )
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._locator.invalidate()
            raise PredictorUnavailable(f"predictor is unreachable ({exc.__class__.__name__})") from None
        except httpx.TimeoutException:
            raise ServiceError(504, "predictor did not answer within PREDICTOR_TIMEOUT_S") from None
        except httpx.HTTPError as exc:
            self._locator.invalidate()
            raise PredictorUnavailable(f"predictor is unreachable ({exc.__class__.__name__})") from None
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
        return AudioStream(response)
