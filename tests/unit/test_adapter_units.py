"""Fast, in-process tests of the adapter's building blocks (no servers)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import wave

import httpx
import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from adapter.audio import Encoder, Rechunker, chunk_bytes_for, encode_whole, to_pcm16, wav_header
from adapter.errors import APIError, describe_validation_errors
from adapter.limits import SlotPool, check_text_length
from adapter.predictor_client import PredictorClient, PredictorError
from adapter.schemas import RANGES, SayMessage, TTSRequest
from adapter.settings import Settings, SettingsError
from adapter.voice_library import DEFAULT_FILE, VoiceLibrary
from tests.support.servers import make_audio

# --- settings ---------------------------------------------------------------------------------


def test_settings_defaults_follow_the_seed():
    s = Settings.from_env({})
    assert (s.host, s.port, s.predictor_url) == ("0.0.0.0", 8081, "http://localhost:8080")
    assert (s.voices_dir, s.default_voice, s.api_token) == ("./voices", None, None)
    assert (s.max_concurrent_requests, s.max_text_length, s.max_upload_bytes) == (3, 5000, 20 * 1024 * 1024)
    assert s.log_level == "info"


def test_settings_parse_types_and_log_level_names():
    s = Settings.from_env(
        {
            "PORT": "9000",
            "MAX_CONCURRENT_REQUESTS": "7",
            "PREDICTOR_TIMEOUT_S": "12.5",
            "LOG_LEVEL": "warn",
            "API_TOKEN": "t",
            "DEFAULT_VOICE": "a.wav",
        }
    )
    assert (s.port, s.max_concurrent_requests, s.predictor_timeout_s) == (9000, 7, 12.5)
    assert s.uvicorn_log_level == "warning" and s.api_token == "t" and s.default_voice == "a.wav"


@pytest.mark.parametrize(
    "env, word",
    [
        ({"PORT": "abc"}, "PORT"),
        ({"MAX_CONCURRENT_REQUESTS": "0"}, "MAX_CONCURRENT_REQUESTS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"PREDICTOR_URL": "localhost:8080"}, "PREDICTOR_URL"),
    ],
)
def test_settings_errors_name_the_variable(env, word):
    with pytest.raises(SettingsError, match=word):
        Settings.from_env(env)


# --- audio ------------------------------------------------------------------------------------


def test_pcm16_clips_and_is_little_endian():
    data = to_pcm16(np.array([0.0, 1.0, -1.0, 2.0], dtype=np.float32))
    assert np.frombuffer(data, "<i2").tolist() == [0, 32767, -32767, 32767]


def test_streaming_wav_header_is_readable_and_whole_wav_is_exact():
    x = (0.2 * np.sin(np.arange(24000) / 10)).astype(np.float32)
    enc = Encoder("wav", 16000)
    streamed = enc.stream_header() + enc.encode(x[:10000]) + enc.encode(x[10000:]) + enc.encode(x[:0], last=True)
    assert streamed[4:8] == b"\xff\xff\xff\xff" and streamed[40:44] == b"\xff\xff\xff\xff"
    data, rate = sf.read(io.BytesIO(streamed))
    assert rate == 16000 and len(data) == 16000 == enc.samples_out
    whole = encode_whole(x, "wav", 48000)
    with wave.open(io.BytesIO(whole)) as w:
        assert (w.getframerate(), w.getnframes(), w.getsampwidth()) == (48000, 48000, 2)
    assert len(wav_header(8000, 10)) == 44


@pytest.mark.parametrize("rate", [16000, 22050, 24000, 44100, 48000])
def test_resampled_length_matches_the_rate(rate):
    enc = Encoder("pcm_s16le", rate)
    x = np.zeros(24000, dtype=np.float32)
    total = sum(len(enc.encode(x[i : i + 5000])) for i in range(0, 24000, 5000)) + len(enc.encode(x[:0], last=True))
    assert total == rate * 2


def test_rechunker_cuts_exact_sizes_without_holding_any_back():
    size = chunk_bytes_for(16000, 40)
    assert size == 1280
    r = Rechunker(size)
    out = list(r.feed(b"a" * 3000))
    assert [len(p) for p in out] == [1280, 1280]  # every full piece at once
    out += list(r.feed(b"b" * 300)) + list(r.finish())
    assert [len(p) for p in out] == [1280, 1280, 740]
    assert b"".join(out) == b"a" * 3000 + b"b" * 300


# --- schemas and errors -----------------------------------------------------------------------


def test_format_alias_and_defaults():
    req = TTSRequest.model_validate({"text": "hi", "audio": {"format": "pcm"}})
    assert req.audio.format == "pcm_s16le" and req.audio.stream is False and req.model == "standard"
    say = SayMessage.model_validate({"type": "say", "text": "hi"})
    assert (say.audio.format, say.audio.chunk_size_ms, say.audio.stream) == ("pcm_s16le", 40, True)


def test_validation_message_names_field_and_range():
    with pytest.raises(ValidationError) as info:
        TTSRequest.model_validate({"text": "hi", "voice": {"exaggeration": 2.5}})
    status, message = describe_validation_errors(info.value.errors(), RANGES)
    assert status == 422 and "voice.exaggeration" in message and "0.0-2.0" in message


def test_blank_text_and_unknown_fields_are_refused():
    for body in ({"text": "   "}, {"text": "hi", "voice": {"temprature": 1}}, {"text": "hi", "model": "big"}):
        with pytest.raises(ValidationError):
            TTSRequest.model_validate(body)


def test_slots_are_shared_and_released_once():
    pool = SlotPool(2)
    a, b = pool.try_acquire(), pool.try_acquire()
    with pytest.raises(APIError) as info:
        pool.try_acquire()
    assert info.value.status == 429 and info.value.headers["Retry-After"]
    a.release()
    a.release()
    assert pool.in_use == 1
    b.release()
    assert pool.in_use == 0


def test_text_length_limit_names_the_limit():
    check_text_length("x" * 10, 10)
    with pytest.raises(APIError, match="10") as info:
        check_text_length("x" * 11, 10)
    assert info.value.status == 413


# --- voice library ----------------------------------------------------------------------------


@pytest.fixture
def library(tmp_path):
    voices = tmp_path / "voices"
    voices.mkdir()
    (voices / "a.wav").write_bytes(make_audio(3))
    (voices / "long.flac").write_bytes(make_audio(6, fmt="FLAC"))
    (voices / ".hidden.wav").write_bytes(make_audio(3))
    (tmp_path / "secret.wav").write_bytes(make_audio(3))
    return VoiceLibrary(str(voices), None, 2.0, 60.0)


def test_resolve_accepts_names_and_absolute_paths_inside(library):
    assert library.resolve("a.wav") == "a.wav"
    assert library.resolve(str(library.root / "a.wav")) == "a.wav"


def test_outside_paths_get_one_message_whether_or_not_they_exist(library, tmp_path):
    os.symlink(tmp_path / "secret.wav", library.root / "link.wav")
    messages = set()
    for name in (
        "../secret.wav",
        "../missing.wav",
        str(tmp_path / "secret.wav"),
        str(tmp_path / "missing.wav"),
        "/etc/passwd",
        "link.wav",
    ):
        with pytest.raises(APIError) as info:
            library.resolve(name)
        assert info.value.status == 400
        messages.add(info.value.message.replace(name, "<name>"))
    assert len(messages) == 1


def test_missing_voice_inside_is_404_and_hidden_files_are_not_voices(library):
    with pytest.raises(APIError) as info:
        library.resolve("nope.wav")
    assert info.value.status == 404 and "nope.wav" in info.value.message
    with pytest.raises(APIError):
        library.resolve(DEFAULT_FILE)
    names = [v["name"] for v in library.list_voices()]
    assert names == ["a.wav", "long.flac"]
    long = library.list_voices()[1]
    assert long["turbo_ok"] is True and long["sample_rate"] == 16000 and long["duration_seconds"] == 6.0


def test_default_precedence_and_sharing_between_instances(library):
    env_lib = VoiceLibrary(str(library.root), "a.wav", 2.0, 60.0)
    assert env_lib.default() == ("a.wav", "env")
    assert library.default() == (None, None)
    library.set_default("long.flac")
    assert env_lib.default() == ("long.flac", "api")  # the file written by another instance wins
    assert json.loads((library.root / DEFAULT_FILE).read_text()) == {"voice_path": "long.flac"}
    library.set_default(None)
    assert env_lib.default() == (None, "api") and env_lib.voice_for_request(None) is None
    assert env_lib.voice_for_request("a.wav") == "a.wav"


def test_env_default_outside_the_folder_is_a_startup_error(library):
    with pytest.raises(ValueError, match="DEFAULT_VOICE"):
        VoiceLibrary(str(library.root), "../secret.wav", 2.0, 60.0)


def test_store_upload_checks_content_duration_and_conflicts(library):
    info = library.store_upload(io.BytesIO(make_audio(3)), "new voice.WAV", overwrite=False)
    assert info["name"] == "new voice.wav" and info["overwritten"] is False and info["turbo_ok"] is False
    with pytest.raises(APIError) as conflict:
        library.store_upload(io.BytesIO(make_audio(3)), "new voice.wav", overwrite=False)
    assert conflict.value.status == 409
    assert library.store_upload(io.BytesIO(make_audio(7)), "new voice.wav", overwrite=True)["overwritten"] is True
    for data, name, status in (
        (b"not audio" * 100, "x.wav", 415),
        (make_audio(1), "short.wav", 422),
        (make_audio(3), "....wav", 400),
        (make_audio(61, rate=8000), "huge.wav", 422),
    ):
        with pytest.raises(APIError) as info:
            library.store_upload(io.BytesIO(data), name, overwrite=False)
        assert info.value.status == status, name
    # A name without a suffix takes the content's; no temp files are left behind.
    assert library.store_upload(io.BytesIO(make_audio(3, fmt="FLAC")), "plain", overwrite=False)["name"] == "plain.flac"
    assert not [p for p in os.listdir(library.root) if p.startswith(".upload-")]
    assert oct((library.root / "plain.flac").stat().st_mode & 0o777) == "0o644"


def test_configmap_style_links_keep_their_visible_names(tmp_path):
    # Kubernetes publishes ConfigMap files as links through a hidden "..data" folder.
    root = tmp_path / "voices"
    (root / "..2024_01_01").mkdir(parents=True)
    (root / "..2024_01_01" / "cm.wav").write_bytes(make_audio(3))
    os.symlink("..2024_01_01", root / "..data")
    os.symlink("..data/cm.wav", root / "cm.wav")
    lib = VoiceLibrary(str(root), "cm.wav", 2.0, 60.0)
    assert [v["name"] for v in lib.list_voices()] == ["cm.wav"]
    assert lib.resolve("cm.wav") == "cm.wav" == lib.voice_for_request(None)
    assert lib.resolve(str(root / "cm.wav")) == "cm.wav"


# --- predictor client (SSE parsing and error relay, on a mock transport) ------------------------


def _sse(*events) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


def _chunk(samples, **fields) -> dict:
    data = np.asarray(samples, dtype="<f4").tobytes()
    return {"type": "chunk", "index": 0, "sample_rate": 24000, "audio_b64": base64.b64encode(data).decode(), **fields}


def _run_stream(handler) -> tuple[list, Exception | None]:
    async def main():
        client = PredictorClient("http://predictor", 5, transport=httpx.MockTransport(handler))
        got, error = [], None
        try:
            stream = await client.open_stream("standard", "hi", {"voice": "a.wav"})
            async for chunk in stream:
                got.append((chunk.samples.tolist(), chunk.final))
        except PredictorError as exc:
            error = exc
        finally:
            await client.aclose()
        return got, error

    return asyncio.run(main())


def test_stream_yields_float_chunks_and_sends_the_documented_body():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(path=request.url.path, body=json.loads(request.content))
        # One event split over two data lines (allowed by SSE) and a comment line.
        body = b": keep-alive\n\n" + _sse(_chunk([0.5, -0.5])) + b'data: {"type": "done",\ndata: "chunks": 1}\n\n'
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    got, error = _run_stream(handler)
    # This predictor flags no chunk final: the end of the stream is marked by an empty final chunk.
    assert error is None and got == [([0.5, -0.5], False), ([], True)]
    assert seen == {
        "path": "/v2/models/standard/generate_stream",
        "body": {"text_input": "hi", "parameters": {"voice": "a.wav"}, "incremental": True},
    }


def test_a_flagged_final_chunk_is_the_last_one():
    body = _sse(_chunk([0.1], final=False), _chunk([0.2], final=True), {"type": "done", "chunks": 2})
    got, error = _run_stream(lambda request: httpx.Response(200, content=body))
    assert error is None and got == [([pytest.approx(0.1)], False), ([pytest.approx(0.2)], True)]


@pytest.mark.parametrize(
    "response, status, words",
    [
        (httpx.Response(400, json={"error": "temperature: must be in [0.1, 1.5]"}), 400, "temperature"),
        (httpx.Response(404, json={"error": "model 'x' is not loaded"}), 404, "not loaded"),
        (httpx.Response(429, json={"error": "busy"}), 429, "busy"),
        (httpx.Response(500, text="boom"), 502, "boom"),
        (httpx.Response(503, json={"error": "loading"}), 503, "loading"),
        (
            httpx.Response(200, content=_sse(_chunk([0.1]), {"type": "error", "code": 400, "message": "bad voice"})),
            400,
            "bad voice",
        ),
        (httpx.Response(200, content=_sse(_chunk([0.1]))), 502, "done"),
        (
            httpx.Response(200, content=_sse({"type": "chunk", "sample_rate": 24000, "audio_b64": "%%%"})),
            502,
            "malformed",
        ),
        (httpx.Response(200, content=b"data: {not json\n\n"), 502, "malformed"),
    ],
)
def test_predictor_errors_are_relayed_with_a_fitting_status(response, status, words):
    _, error = _run_stream(lambda request: response)
    assert error is not None and error.status == status and words in error.message


def test_unreachable_predictor_is_503():
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    _, error = _run_stream(handler)
    assert error.status == 503 and "unreachable" in error.message
