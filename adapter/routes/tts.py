"""POST /api/tts: whole files, or chunked transfer as the audio is generated."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from adapter.codecs import FORMATS, check_output
from adapter.routes import get_ctx
from adapter.schemas import ErrorBody, TTSRequest
from adapter.seed_requests import SEGMENTS_HEADER, seed_request, segments_header
from adapter.synthesis import AppContext, Synthesis
from adapter.transport import SynthesisStreamingResponse, audio_bytes, http_answer

router = APIRouter(tags=["tts"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 429, 502, 503, 504)
}
_AUDIO: dict[str, dict[str, Any]] = {fmt.media_type: {} for fmt in FORMATS.values()}


def _audio_headers(fmt: str, rate: int) -> dict[str, str]:
    return {"X-Audio-Format": fmt, "X-Sample-Rate": str(rate), "X-Audio-Channels": "1"}


@router.post(
    "/api/tts",
    summary="Synthesise speech",
    response_class=Response,
    responses={200: {"content": _AUDIO, "description": "Audio in audio.format (see X-Sample-Rate)"}, **_ERRORS},
)
async def tts(body: TTSRequest, request: Request, ctx: AppContext = Depends(get_ctx)) -> Response:
    check_output(body.audio.format, body.audio.sample_rate)
    synthesis = Synthesis(ctx, seed_request(body, "http"))
    fmt, rate = body.audio.format, body.audio.sample_rate

    def whole(data: bytes) -> Response:
        headers = {**_audio_headers(fmt, rate), "X-Audio-Duration-Seconds": f"{synthesis.duration_seconds:.3f}"}
        if synthesis.timings is not None:
            headers[SEGMENTS_HEADER] = segments_header(synthesis.timings)
        return Response(data, media_type=synthesis.encoder.media_type, headers=headers)

    def streamed() -> StreamingResponse:
        return SynthesisStreamingResponse(
            synthesis,
            audio_bytes(synthesis),
            media_type=synthesis.encoder.media_type,
            headers=_audio_headers(fmt, rate),
        )

    return await http_answer(request, synthesis, whole, streamed)
