"""The predictor, seen over the network: readiness, server info and the SSE audio stream."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from typing import NamedTuple

import httpx
import numpy as np

from adapter.audio import MODEL_SAMPLE_RATE
from adapter.discovery import PredictorLocator, StaticLocator

log = logging.getLogger("adapter.predictor")

# Health checks must answer quickly even when generation timeouts are long.
_PROBE_TIMEOUT_S = 5.0


class PredictorError(Exception):
    """A failure to relay: `status` is what the adapter's client should see."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class PredictorUnavailable(PredictorError):
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


def _chunk_samples(event: dict) -> np.ndarray:
    if event.get("sample_rate", MODEL_SAMPLE_RATE) != MODEL_SAMPLE_RATE:
        raise PredictorError(
            502, f"predictor sent audio at {event.get('sample_rate')} Hz, expected {MODEL_SAMPLE_RATE}"
        )
    try:
        return np.frombuffer(base64.b64decode(event["audio_b64"], validate=True), dtype="<f4")
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise PredictorError(502, "predictor sent a malformed audio chunk") from None


class StreamedAudio(NamedTuple):
    samples: np.ndarray  # float32 mono at 24 kHz
    final: bool  # nothing follows: exactly one chunk of a complete stream says so


class AudioStream:
    """One generate_stream call. Iterate for StreamedAudio; `aclose()` cancels it upstream."""

    def __init__(self, response: httpx.Response):
        self._response = response
        self.done: dict | None = None
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[StreamedAudio]:
        try:
            final_seen = False
            async for event in self._events():
                kind = event.get("type")
                if kind == "chunk":
                    final_seen = event.get("final") is True
                    yield StreamedAudio(_chunk_samples(event), final_seen)
                elif kind == "done":
                    self.done = event
                    if not final_seen:  # a predictor that does not flag its last chunk
                        yield StreamedAudio(np.zeros(0, dtype=np.float32), True)
                    return
                elif kind == "error":
                    code = event.get("code")
                    status = _relay_status(code) if isinstance(code, int) else 502
                    raise PredictorError(status, str(event.get("message") or "generation failed"))
        except httpx.TimeoutException:
            raise PredictorError(504, "predictor timed out while generating (PREDICTOR_TIMEOUT_S)") from None
        except httpx.TransportError as exc:
            raise PredictorError(502, f"predictor stream broke off ({exc.__class__.__name__})") from None
        finally:
            await self.aclose()
        if self.done is None:
            raise PredictorError(502, "predictor stream ended without a done event")

    async def _events(self) -> AsyncIterator[dict]:
        data_lines: list[str] = []
        async for line in self._response.aiter_lines():
            if line.startswith("data:"):
                data_lines.append(line[5:].removeprefix(" "))
            elif line == "" and data_lines:
                raw, data_lines = "\n".join(data_lines), []
                try:
                    event = json.loads(raw)
                except ValueError:
                    raise PredictorError(502, "predictor sent a malformed stream event") from None
                if isinstance(event, dict):
                    yield event

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
        """Start a generation; errors before the first chunk raise PredictorError with a relayable status.
        `incremental=False`: one chunk per text piece, upstream-exact and cheaper, for callers that wait anyway."""
        body = {"text_input": text, "parameters": parameters, "incremental": incremental}
        # A known address is used even if the InferenceService is not Ready: the predictor has the last word.
        base = await self._base_url(require_ready=False)
        request = self._client.build_request(
            "POST", f"{base}/v2/models/{model}/generate_stream", json=body, headers={"Accept": "text/event-stream"}
        )
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._locator.invalidate()
            raise PredictorUnavailable(f"predictor is unreachable ({exc.__class__.__name__})") from None
        except httpx.TimeoutException:
            raise PredictorError(504, "predictor did not answer within PREDICTOR_TIMEOUT_S") from None
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
            raise PredictorError(_relay_status(response.status_code), message)
        return AudioStream(response)
