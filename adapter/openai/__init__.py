"""OpenAI-compatible speech API (/v1/audio/speech, /v1/models, /v1/audio/voices), split like vllm's
entrypoints: wire models (protocol.py), logic (serving.py) and the HTTP transport (router.py)."""

from adapter.openai.router import build_router

__all__ = ["build_router"]
