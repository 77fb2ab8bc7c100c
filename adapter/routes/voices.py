"""Voice library routes: list, upload, and the shared default voice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from adapter.errors import APIError
from adapter.routes import get_ctx
from adapter.schemas import DefaultVoice, ErrorBody, SetDefaultVoice, UploadResult, VoiceList
from adapter.synthesis import AppContext

router = APIRouter(tags=["voices"])

# Room for the multipart boundaries, part headers and the small text fields around the file.
_MULTIPART_OVERHEAD = 64 * 1024
_DRAIN_TIMEOUT_S = 10.0
_TRUE = ("1", "true", "yes", "on")


def _errors(*codes: int) -> dict:
    return {code: {"model": ErrorBody} for code in codes}


@router.get("/api/voices", response_model=VoiceList, summary="List the voices in VOICES_DIR", responses=_errors(401))
async def list_voices(ctx: AppContext = Depends(get_ctx)) -> dict:
    # Probing files touches the disk (maybe a network volume): keep it off the event loop.
    voices = await run_in_threadpool(ctx.voices.list_voices)
    return {"voices": voices, "default_voice": ctx.voices.default()[0]}


@router.get(
    "/api/voice/default", response_model=DefaultVoice, summary="The current default voice", responses=_errors(401)
)
async def get_default_voice(ctx: AppContext = Depends(get_ctx)) -> dict:
    name, source = ctx.voices.default()
    return {"voice_path": name, "source": source}


@router.post(
    "/api/voice/default",
    response_model=DefaultVoice,
    summary="Set (or clear) the shared default voice",
    responses=_errors(400, 401, 404, 422, 507),
)
async def set_default_voice(body: SetDefaultVoice, ctx: AppContext = Depends(get_ctx)) -> dict:
    await run_in_threadpool(ctx.voices.set_default, body.voice_path)
    name, source = ctx.voices.default()
    return {"voice_path": name, "source": source}


class _TooLarge(Exception):
    pass


class _LimitedBody:
    """The request body, refused as soon as it passes `limit` (Content-Length is not trusted)."""

    def __init__(self, request: Request, limit: int):
        self._receive = request.receive
        self._limit = limit
        self._seen = 0
        self._finished = False

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        while not self._finished:
            message = await self._receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            body = message.get("body", b"")
            self._finished = not message.get("more_body", False)
            self._seen += len(body)
            if self._seen > self._limit:
                raise _TooLarge()
            if body:
                yield body

    async def drain(self, cap: int) -> None:
        """Read and drop what the client is still sending, so that it reads our 413 rather than
        a reset connection; bounded in bytes and time."""
        read = 0
        try:
            async with asyncio.timeout(_DRAIN_TIMEOUT_S):
                while not self._finished and read < cap:
                    message = await self._receive()
                    if message["type"] != "http.request":
                        return
                    read += len(message.get("body", b""))
                    self._finished = not message.get("more_body", False)
        except TimeoutError:
            return


def _too_large(limit: int) -> APIError:
    return APIError(413, f"upload is larger than the limit of {limit} bytes (MAX_UPLOAD_BYTES)")


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "WAV, MP3 or FLAC"},
                        "name": {"type": "string", "description": "Voice name (default: the file's name)"},
                        "overwrite": {"type": "boolean", "default": False},
                    },
                }
            }
        },
    }
}


@router.post(
    "/api/voices/upload",
    status_code=201,
    response_model=UploadResult,
    openapi_extra=_UPLOAD_BODY,
    summary="Upload a reference voice (multipart field 'file')",
    responses=_errors(400, 401, 409, 413, 415, 422, 507),
)
async def upload_voice(
    request: Request,
    overwrite: bool = Query(False, description="Replace an existing voice of the same name"),
    name: str | None = Query(None, max_length=200, description="Voice name (default: the file's name)"),
    ctx: AppContext = Depends(get_ctx),
) -> dict | Response:
    limit = ctx.settings.max_upload_bytes
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise APIError(415, "send the voice as multipart/form-data with the file in field 'file'")
    body = _LimitedBody(request, limit + _MULTIPART_OVERHEAD)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD:
        await body.drain(2 * limit)
        raise _too_large(limit)

    parser = MultiPartParser(request.headers, body.chunks(), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except _TooLarge:
        await body.drain(2 * limit)
        raise _too_large(limit) from None
    except ClientDisconnect:
        return Response(status_code=499)  # nobody is left to read an answer
    except MultiPartException as exc:
        raise APIError(400, f"malformed multipart body: {exc}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise APIError(400, "multipart field 'file' (the audio file) is required")
        if upload.size is not None and upload.size > limit:
            raise _too_large(limit)
        if str(form.get("overwrite", "")).lower() in _TRUE:
            overwrite = True
        filename = name or str(form.get("name") or "") or upload.filename or ""
        if not filename:
            raise APIError(400, "the voice needs a name: send a file name or the 'name' field")
        return await run_in_threadpool(ctx.voices.store_upload, upload.file, filename, overwrite)
    finally:
        await form.close()
