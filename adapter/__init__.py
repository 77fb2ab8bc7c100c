"""FastAPI adapter: the seed's HTTP/WebSocket API in front of the Chatterbox KServe predictor."""

__version__ = "0.1.0"
