"""`python -m adapter`: serve the API with uvicorn, configured from the environment."""

from __future__ import annotations

import logging
import sys

import uvicorn

from adapter.app import create_app
from adapter.settings import Settings, SettingsError


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
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=level,
        # Probes and scrapers hit /health and /metrics constantly; access logs only when debugging.
        access_log=level in ("debug", "trace"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
