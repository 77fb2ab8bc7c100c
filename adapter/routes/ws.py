"""WS /ws/tts: the seed's streaming protocol (ready, say -> chunk* + done, set_voice, error)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

from fastapi import APIRouter, Depends, WebSocket
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocketDisconnect

from adapter.audio import Encoder, Rechunker, chunk_bytes_for, wav_header
from adapter.auth import require_ws_token
from adapter.errors import APIError, describe_validation_errors
from adapter.schemas import (
    RANGES,
    ChunkMessage,
    DoneMessage,
    ErrorMessage,
    ReadyMessage,
    SayMessage,
    SetVoiceMessage,
    VoiceSetMessage,
    first_surrogate,
)
from adapter.synthesis import AppContext, Synthesis
from contract.errors import ServiceError

log = logging.getLogger("adapter.ws")
router = APIRouter()

# Close code for "try again later" (RFC 6455 registry), used when the predictor is down at connect.
_WS_TRY_AGAIN_LATER = 1013


class _Gone(Exception):
    """The client is no longer there to receive messages."""


class Session:
    def __init__(self, websocket: WebSocket, ctx: AppContext):
        self.ws = websocket
        self.ctx = ctx
        self.voice: str | None = None
        self.tasks: dict[object, tuple[asyncio.Task, Synthesis]] = {}
        # Several requests stream concurrently; one frame must go out whole before the next.
        self._send_lock = asyncio.Lock()
        self._auto_id = 0

    async def send(self, message: BaseModel) -> None:
        try:
            async with self._send_lock:
                await self.ws.send_text(message.model_dump_json())
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise _Gone() from None

    async def error(self, request_id: object, code: int | str, message: str) -> None:
        await self.send(ErrorMessage(id=request_id, code=code, message=message))

    async def run(self) -> None:
        try:
            info = await self.ctx.predictor.info()
        except ServiceError as exc:
            await self.error(None, exc.status, exc.message)
            await self.ws.close(code=_WS_TRY_AGAIN_LATER, reason="predictor unavailable")
            return
        await self.send(ReadyMessage(models=list(info.get("loaded_models") or []), device=info.get("device")))
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    await self.error(None, 400, "binary frames are not supported; send JSON text messages")
                    continue
                await self.handle(text)
        finally:
            await self.cancel_all()

    async def handle(self, text: str) -> None:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            await self.error(None, 400, f"malformed JSON: {exc}")
            return
        if not isinstance(raw, dict):
            await self.error(None, 400, "a message must be a JSON object with a 'type'")
            return
        request_id = (
            raw.get("id") if isinstance(raw.get("id"), (str, int)) and not isinstance(raw.get("id"), bool) else None
        )
        bad_text = first_surrogate(raw, "")
        if bad_text:  # no encoder takes a lone surrogate: not even an id holding one can be echoed back
            await self.error(None if first_surrogate(request_id, "id") else request_id, 400, bad_text)
            return
        kind = raw.get("type")
        try:
            if kind == "say":
                self.start_say(raw)
            elif kind == "set_voice":
                await self.set_voice(raw)
            elif kind is None:
                raise APIError(400, "message has no 'type' (expected 'say' or 'set_voice')")
            else:
                raise APIError(400, f"unknown message type {kind!r} (expected 'say' or 'set_voice')")
        except ValidationError as exc:
            _, detail = describe_validation_errors(exc.errors(), RANGES)
            await self.error(request_id, 422, detail)
        except APIError as exc:
            await self.error(request_id, exc.status, exc.message)

    async def set_voice(self, raw: dict) -> None:
        msg = SetVoiceMessage.model_validate(raw)
        if msg.voice_path is None:
            self.voice = None
        else:
            self.voice = self.ctx.voices.resolve(msg.voice_path)
        if msg.persist:
            await asyncio.to_thread(self.ctx.voices.set_default, self.voice)
        await self.send(VoiceSetMessage(id=msg.id, voice_path=self.voice, persisted=msg.persist))

    def start_say(self, raw: dict) -> None:
        msg = SayMessage.model_validate(raw)
        if msg.id is None:
            self._auto_id += 1
            msg.id = f"auto-{self._auto_id}"
        if msg.id in self.tasks:
            raise APIError(409, f"request id {msg.id!r} is already in progress on this connection")
        synthesis = Synthesis(self.ctx, msg, "ws", connection_voice=self.voice)
        task = asyncio.create_task(self.say(msg, synthesis))
        self.tasks[msg.id] = (task, synthesis)
        task.add_done_callback(lambda _t, key=msg.id: self.tasks.pop(key, None))

    async def say(self, msg: SayMessage, synthesis: Synthesis) -> None:
        audio = msg.audio
        outcome, encoder = "error", None
        try:
            encoder = Encoder(audio.format, audio.sample_rate)
            if audio.stream:
                await self._stream(msg, synthesis, encoder)
            else:
                await self._whole(msg, synthesis, encoder)
            await self.send(DoneMessage(id=msg.id, duration_seconds=round(encoder.duration_seconds, 3)))
            outcome = "ok"
        except APIError as exc:
            await self._report(msg.id, exc.status, exc.message)
        except _Gone:
            outcome = "cancelled"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception:
            log.exception("synthesis %r failed", msg.id)
            await self._report(msg.id, 500, "internal server error")
        finally:
            await synthesis.close(outcome, encoder.duration_seconds if encoder else 0.0)

    async def _report(self, request_id: object, code: int, message: str) -> None:
        try:
            await self.error(request_id, code, message)
        except _Gone:
            pass

    async def _stream(self, msg: SayMessage, synthesis: Synthesis, encoder: Encoder) -> None:
        rechunker = Rechunker(chunk_bytes_for(encoder.sample_rate, msg.audio.chunk_size_ms))
        index = 0

        async def emit(piece: bytes, is_last: bool) -> None:
            nonlocal index
            if index == 0:
                piece = encoder.stream_header() + piece
            await self.send(
                ChunkMessage(id=msg.id, index=index, data=base64.b64encode(piece).decode("ascii"), is_last=is_last)
            )
            index += 1

        # Every full piece goes out as soon as it exists; the predictor flags its final chunk, so
        # the last piece can say is_last without holding audio back to wait for the end.
        async for chunk in synthesis.chunks():
            pieces = list(rechunker.feed(encoder.encode(chunk.samples, last=chunk.final)))
            if chunk.final:
                pieces = [*pieces, *rechunker.finish()] or [b""]
            for i, piece in enumerate(pieces):
                await emit(piece, chunk.final and i == len(pieces) - 1)

    async def _whole(self, msg: SayMessage, synthesis: Synthesis, encoder: Encoder) -> None:
        pcm = b"".join([encoder.encode(chunk.samples, last=chunk.final) async for chunk in synthesis.chunks()])
        data = wav_header(encoder.sample_rate, len(pcm)) + pcm if encoder.format == "wav" else pcm
        await self.send(ChunkMessage(id=msg.id, index=0, data=base64.b64encode(data).decode("ascii"), is_last=True))

    async def cancel_all(self) -> None:
        entries = list(self.tasks.values())
        for task, _ in entries:
            task.cancel()
        # Each task's cleanup closes its upstream stream and frees its slot before we return.
        await asyncio.gather(*(task for task, _ in entries), return_exceptions=True)
        for _, synthesis in entries:
            # A task cancelled before its first step never ran its cleanup; close() is idempotent.
            await synthesis.close("cancelled")


@router.websocket("/ws/tts")
async def ws_tts(websocket: WebSocket, _auth: None = Depends(require_ws_token)) -> None:
    ctx: AppContext = websocket.app.state.ctx
    await websocket.accept()
    ctx.metrics.ws_connections.inc()
    ctx.metrics.ws_connections_total.inc()
    try:
        await Session(websocket, ctx).run()
    except (_Gone, WebSocketDisconnect):
        pass
    finally:
        ctx.metrics.ws_connections.dec()
