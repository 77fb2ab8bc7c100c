"""Prometheus metrics for the adapter (its own registry, so several apps can share a process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "adapter_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "adapter_http_request_duration_seconds",
            "Time until the response finished (streams included)",
            ["route", "method"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "adapter_synthesis_in_flight", "Syntheses holding a concurrency slot", registry=self.registry
        )
        self.synthesis = Counter(
            "adapter_synthesis",
            "Finished syntheses by transport, model and outcome",
            ["transport", "model", "outcome"],
            registry=self.registry,
        )
        self.time_to_first_audio = Histogram(
            "adapter_time_to_first_audio_seconds",
            "From accepting a request to its first audio bytes",
            ["transport", "model"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60),
        )
        self.inter_chunk_gap = Histogram(
            "adapter_inter_chunk_gap_seconds",
            "Time between consecutive audio chunks from the predictor",
            ["transport", "model"],
            registry=self.registry,
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10),
        )
        self.audio_seconds = Counter(
            "adapter_audio_seconds", "Seconds of audio delivered", ["transport", "model"], registry=self.registry
        )
        self.ws_connections = Gauge(
            "adapter_websocket_connections", "Open WebSocket connections", registry=self.registry
        )
        self.ws_connections_total = Counter(
            "adapter_websocket_connections_opened", "WebSocket connections opened", registry=self.registry
        )


class RequestMetricsMiddleware:
    """Plain ASGI (not BaseHTTPMiddleware), so streamed bodies pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # The route template keeps label cardinality bounded (no raw paths with ids or junk).
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.request_seconds.labels(route, method).observe(time.perf_counter() - start)
