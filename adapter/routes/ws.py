"""WS /ws/tts: the seed's streaming protocol (ready, say -> chunk* + done, set_voice, error)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import numpy as np
from fastapi import APIRouter, Depends, WebSocket
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocketDisconnect

from adapter.audio import Rechunker, chunk_bytes_for
from adapter.auth import require_ws_token
from adapter.codecs import Encoder, check_output
from adapter.errors import APIError, describe_validation_errors
from adapter.schemas import (
    RANGES,
    ChunkMessage,
    DoneMessage,
    ErrorMessage,
    ReadyMessage,
    RequestId,
    SayMessage,
    SetVoiceMessage,
    VoiceSetMessage,
    first_surrogate,
)
from adapter.shutdown import SHUTTING_DOWN
from adapter.synthesis import AppContext, Synthesis
from contract.errors import ServiceError

log = logging.getLogger("adapter.ws")
router = APIRouter()

# Close codes (RFC 6455 registry): "try again later" when the predictor is down at connect; "service
# restart" while shutting down; "policy violation" for a client that leaves our messages unread.
_WS_TRY_AGAIN_LATER = 1013
_WS_SERVICE_RESTART = 1012
_WS_POLICY_VIOLATION = 1008


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
        self._dropping: asyncio.Task | None = None

    async def send(self, message: BaseModel) -> None:
        # A client that stops reading fills the socket buffers, then every send waits: past the
        # timeout it is dropped, so that it holds neither a slot nor more buffered audio.
        timeout = self.ctx.settings.client_send_timeout_s
        if self._dropping is not None:
            raise _Gone()
        try:
            async with self._send_lock:
                await asyncio.wait_for(self.ws.send_text(message.model_dump_json()), timeout)
        except TimeoutError:
            log.warning("WebSocket client read nothing for %s s: dropping it", timeout)
            self._drop(f"client did not read for {timeout:g} s (CLIENT_SEND_TIMEOUT_S)")
            raise _Gone() from None
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise _Gone() from None

    def _drop(self, reason: str) -> None:
        async def close() -> None:
            try:
                await self.ws.close(code=_WS_POLICY_VIOLATION, reason=reason)
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass

        if self._dropping is None:
            self._dropping = asyncio.create_task(close())

    async def error(self, request_id: RequestId, code: int | str, message: str) -> None:
        await self.send(ErrorMessage(id=request_id, code=code, message=message))

    async def run(self) -> None:
        if self.ctx.drain.draining:
            await self.error(None, 503, SHUTTING_DOWN)
            await self.ws.close(code=_WS_SERVICE_RESTART, reason="server is shutting down")
            return
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
        check_output(msg.audio.format, msg.audio.sample_rate)
        synthesis = Synthesis(self.ctx, msg, "ws", connection_voice=self.voice)
        task = asyncio.create_task(self.say(msg, synthesis))
        self.tasks[msg.id] = (task, synthesis)
        key = msg.id
        task.add_done_callback(lambda _t: self.tasks.pop(key, None))

    async def say(self, msg: SayMessage, synthesis: Synthesis) -> None:
        audio = msg.audio
        outcome, encoder = "error", None
        try:
            encoder = Encoder(audio.format, audio.sample_rate, streaming=audio.stream)
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

    async def _report(self, request_id: RequestId, code: int, message: str) -> None:
        try:
            await self.error(request_id, code, message)
        except _Gone:
            pass

    async def _stream(self, msg: SayMessage, synthesis: Synthesis, encoder: Encoder) -> None:
        # Compressed output goes out as encoded (whole frames/pages); only PCM can be cut anywhere.
        rechunker = (
            Rechunker(chunk_bytes_for(encoder.sample_rate, msg.audio.chunk_size_ms)) if encoder.rechunkable else None
        )
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
            data = encoder.encode(chunk.samples, last=chunk.final)
            if rechunker is None:
                pieces = [data] if data else []
            else:
                pieces = list(rechunker.feed(data))
                if chunk.final:
                    pieces += rechunker.finish()
            if chunk.final:
                pieces = pieces or [b""]
            for i, piece in enumerate(pieces):
                await emit(piece, chunk.final and i == len(pieces) - 1)

    async def _whole(self, msg: SayMessage, synthesis: Synthesis, encoder: Encoder) -> None:
        pieces = [chunk.samples async for chunk in synthesis.chunks()]
        audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        data = await asyncio.to_thread(encoder.encode, audio, True)  # compressing a long text takes a while
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
