"""Chatterbox TTS as a KServe custom predictor (Open Inference Protocol, REST and gRPC)."""

from contract import __version__

__all__ = ["__version__"]
