"""WS /ws/tts: the seed's streaming protocol (ready, say -> chunk* + done, set_voice, error)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

from fastapi import APIRouter, Depends, WebSocket
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocketDisconnect

from adapter.auth import require_ws_token
from adapter.codecs import check_output
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
from adapter.seed_requests import seed_request, segment_spans
from adapter.shutdown import SHUTTING_DOWN
from adapter.synthesis import AppContext, Synthesis
from adapter.transport import ClientGone
from contract.errors import ServiceError

log = logging.getLogger("adapter.ws")
router = APIRouter()

# Close codes (RFC 6455 registry): "try again later" when the predictor is down at connect; "service
# restart" while shutting down; "policy violation" for a client that leaves our messages unread.
_WS_TRY_AGAIN_LATER = 1013
_WS_SERVICE_RESTART = 1012
_WS_POLICY_VIOLATION = 1008


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
            raise ClientGone()
        try:
            async with self._send_lock:
                # A done message leaves out `segments` unless the request was a script.
                data = message.model_dump_json(exclude_none=isinstance(message, DoneMessage))
                await asyncio.wait_for(self.ws.send_text(data), timeout)
        except TimeoutError:
            log.warning("WebSocket client read nothing for %s s: dropping it", timeout)
            self._drop(f"client did not read for {timeout:g} s (CLIENT_SEND_TIMEOUT_S)")
            raise ClientGone() from None
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise ClientGone() from None

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
        synthesis = Synthesis(self.ctx, seed_request(msg, "ws", connection_voice=self.voice))
        task = asyncio.create_task(self.say(msg.id, synthesis))
        self.tasks[msg.id] = (task, synthesis)
        key = msg.id
        task.add_done_callback(lambda _t: self.tasks.pop(key, None))

    async def say(self, request_id: RequestId, synthesis: Synthesis) -> None:
        try:
            async with synthesis:
                if synthesis.request.output.stream:
                    index = 0
                    async for piece in synthesis.encoded():
                        data = base64.b64encode(piece.data).decode("ascii")
                        await self.send(ChunkMessage(id=request_id, index=index, data=data, is_last=piece.last))
                        index += 1
                else:
                    data = base64.b64encode(await synthesis.whole()).decode("ascii")
                    await self.send(ChunkMessage(id=request_id, index=0, data=data, is_last=True))
                timings = synthesis.timings
                await self.send(
                    DoneMessage(
                        id=request_id,
                        duration_seconds=round(synthesis.duration_seconds, 3),
                        segments=segment_spans(timings),
                    )
                )
        except APIError as exc:
            await self._report(request_id, exc.status, exc.message)
        except ClientGone:
            pass
        except Exception:
            log.exception("synthesis %r failed", request_id)
            await self._report(request_id, 500, "internal server error")

    async def _report(self, request_id: RequestId, code: int, message: str) -> None:
        try:
            await self.error(request_id, code, message)
        except ClientGone:
            pass

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
    except (ClientGone, WebSocketDisconnect):
        pass
    finally:
        ctx.metrics.ws_connections.dec()
