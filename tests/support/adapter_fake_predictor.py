"""A test double of the predictor's network API (docs/predictor-api.md) for the adapter's tests.

It speaks the same routes and shapes, produces a sine wave instead of speech, and has a few
test-only controls (under /_test) so tests can see what the adapter sent and whether it cancelled.
Markers in the text change its behaviour:
  [fail400]  400 before streaming        [midfail]  one chunk, then an error event
  [slow]     many chunks, 0.2 s apart    [empty]    no audio at all
  [long]     ~3 s of audio                  [unflagged] no chunk says final (older predictors)

Run: python tests/adapter_fake_predictor.py --port 9000 --voices-dir ./voices [--models standard,turbo]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from predictor.voice_paths import VoicePathError, resolve_voice_path

RATE = 24000
CHUNK = RATE // 4  # 0.25 s per upstream chunk


def build_app(voices_dir: str, models: list[str]) -> FastAPI:
    app = FastAPI()
    state = {"ready": True, "active": 0, "cancelled": 0, "completed": 0, "requests": []}

    def err(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/v2/health/ready")
    async def ready():
        return JSONResponse({"ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    @app.get("/v2/chatterbox/info")
    async def info():
        return {
            "loaded_models": models,
            "device": "cpu",
            "version": "0.1.0-fake",
            "sample_rate": RATE,
            "ready": state["ready"],
        }

    @app.post("/v2/models/{name}/generate_stream")
    async def generate_stream(name: str, request: Request):
        body = await request.json()
        state["requests"].append({"model": name, **body})
        del state["requests"][:-20]
        if name not in models:
            return err(404, f"model '{name}' is not loaded")
        text = body.get("text_input") or ""
        params = body.get("parameters") or {}
        if not text.strip():
            return err(400, "text_input must not be empty")
        if "voice" in params:
            try:
                resolve_voice_path(voices_dir, params["voice"])
            except VoicePathError as exc:
                return err(404 if exc.not_found else 400, str(exc))
        if "[fail400]" in text:
            return err(400, "parameter 'temperature' rejected by fake predictor")

        if "[slow]" in text:
            n_chunks, delay = 100, 0.2
        elif "[long]" in text:
            n_chunks, delay = 12, 0.0
        elif "[empty]" in text:
            n_chunks, delay = 0, 0.0
        else:
            n_chunks, delay = 4, 0.0
        t = np.arange(n_chunks * CHUNK, dtype=np.float32) / RATE
        wave = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype("<f4")

        async def events():
            state["active"] += 1
            finished = False
            try:
                for i in range(n_chunks):
                    if delay:
                        await asyncio.sleep(delay)
                    piece = wave[i * CHUNK : (i + 1) * CHUNK]
                    final = i == n_chunks - 1 and "[unflagged]" not in text
                    yield _sse(
                        {
                            "type": "chunk",
                            "index": i,
                            "sample_rate": RATE,
                            "final": final,
                            "audio_b64": base64.b64encode(piece.tobytes()).decode(),
                        }
                    )
                    if "[midfail]" in text:
                        yield _sse({"type": "error", "code": 500, "message": "fake failure mid-stream"})
                        finished = True
                        return
                yield _sse(
                    {
                        "type": "done",
                        "chunks": n_chunks,
                        "duration_seconds": len(wave) / RATE,
                        "speech_tokens": n_chunks * 6,
                    }
                )
                finished = True
            finally:
                state["active"] -= 1
                state["completed" if finished else "cancelled"] += 1

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/_test/state")
    async def test_state():
        return state

    @app.post("/_test/ready")
    async def test_ready(value: bool):
        state["ready"] = value
        return {"ready": value}

    return app


def _sse(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--voices-dir", required=True)
    parser.add_argument("--models", default="standard,turbo")
    args = parser.parse_args()
    app = build_app(args.voices_dir, [m for m in args.models.split(",") if m])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
