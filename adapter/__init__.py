"""FastAPI adapter: the seed's HTTP/WebSocket API in front of the Chatterbox KServe predictor."""

from contract import __version__

__all__ = ["__version__"]
