"""Chatterbox TTS as a KServe custom predictor (Open Inference Protocol, REST and gRPC)."""

__version__ = "0.1.0"
