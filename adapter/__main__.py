"""`python -m adapter`: serve the API with uvicorn, configured from the environment."""

from __future__ import annotations

import logging
import sys

import uvicorn

from adapter.app import create_app
from adapter.limits import MAX_HEADER_BYTES, WS_MAX_MESSAGE_BYTES
from adapter.settings import Settings, SettingsError
from adapter.shutdown import UVICORN_GRACE_S, DrainingServer


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"adapter: configuration error: {exc}", file=sys.stderr)
        return 2
    level = settings.uvicorn_log_level
    logging.basicConfig(level=settings.logging_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every predictor call at INFO; that is access-log noise unless debugging.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level in ("debug", "trace") else logging.WARNING)
    try:
        app = create_app(settings)
    except ValueError as exc:
        print(f"adapter: configuration error: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=level,
        # Probes and scrapers hit /health and /metrics constantly; access logs only when debugging.
        access_log=level in ("debug", "trace"),
        # h11 caps a request head while it is still arriving (httptools buffers any size).
        http="h11",
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        timeout_graceful_shutdown=UVICORN_GRACE_S,
    )
    DrainingServer(config, app.state.ctx.drain).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
