"""Wyoming (Home Assistant's protocol for local speech services), served by the adapter process so that
it shares the HTTP API's admission limits, voice library and predictor client.

`catalogue`: what `describe` answers and how a Wyoming voice name becomes a model, language and voice;
`handler`: one connection's events; `server`: the TCP listener run by the app's lifespan.
"""

from adapter.wyoming.server import serve_wyoming

__all__ = ["serve_wyoming"]
