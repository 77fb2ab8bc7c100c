"""`python -m predictor`: load the chosen Chatterbox variants, then serve them with kserve's ModelServer.

The settings are read and checked first, before kserve and torch are imported (eight seconds): a bad
value stops the process within a second, with one line naming the variable."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from contract.settings import SettingsError, load_settings

from .config import PredictorSettings


def read_settings() -> PredictorSettings:
    try:
        return load_settings(PredictorSettings)
    except SettingsError as exc:
        raise SystemExit(f"error: {exc}") from None


def main(settings: PredictorSettings | None) -> None:
    """`settings` None: --help was asked for, which argparse answers before anything is loaded."""
    import kserve
    from kserve import logging as kserve_logging
    from kserve.model_server import app as kserve_app

    from .engine.engine import ChatterboxEngine
    from .extension_routes import add_routes
    from .heap import release_free_heap, serve_large_buffers_from_heap
    from .metrics import record_voice_cache
    from .model import ChatterboxModel
    from .service import SynthesisService
    from .shutdown import install_drain, wrap_server_readiness
    from .torch_thread import TorchThread
    from .upstream_patches import refuse_malformed_rest_requests

    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument(
        "--model_dir",
        default="/mnt/models",
        help="Weights folder with one sub-folder per variant (MODEL_DIR overrides it)",
    )
    args, _ = parser.parse_known_args()
    assert settings is not None  # argparse has exited if it was None
    if settings.model_dir is None:
        settings = settings.model_copy(update={"model_dir": args.model_dir})
    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
    logging.getLogger().setLevel(settings.logging_level)
    if settings.heap_large_buffers and not serve_large_buffers_from_heap():
        logging.getLogger(__name__).info("HEAP_LARGE_BUFFERS: not a glibc C library; its allocator is left as it is")
    engine = ChatterboxEngine(settings, on_voice_cache=record_voice_cache)
    torch_thread = TorchThread(on_idle=release_free_heap if settings.release_heap_when_idle else None)
    torch_thread.call(engine.load)
    service = SynthesisService(engine, settings.max_concurrent_requests, torch_thread, settings.drain_timeout_s)
    refuse_malformed_rest_requests()
    add_routes(kserve_app, service)
    install_drain(kserve_app, service.drain)
    models = [ChatterboxModel(name, service) for name in engine.variants]
    server = kserve.ModelServer()
    wrap_server_readiness(server.dataplane, service.drain)
    server.start(models)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(None if {"-h", "--help"} & set(sys.argv[1:]) else read_settings())
