"""What the predictor and the adapter both state, in one place: variants, parameters, the stream
protocol between them, voice-path rules, the error type and the version. Imports no torch, so the
adapter installs without it."""

__version__ = "0.1.0"
