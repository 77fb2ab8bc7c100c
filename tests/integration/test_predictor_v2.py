"""The predictor over the Open Inference Protocol, called by clients no one here wrote:
tritonclient (HTTP and gRPC) and kserve's own InferenceRESTClient, against a real server process
running the real chatterbox code on random-weight checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from scripts.random_weights import write_reference_wav
from tests.support.v2_helpers import SAMPLES_PER_TOKEN, grpc_infer, http_infer

pytestmark = pytest.mark.slow
FEW_TOKENS = {"max_new_tokens": 4, "seed": 11}


def assert_length_matches_tokens(model: str, audio: np.ndarray, speech_tokens: int) -> None:
    if model == "turbo":
        # turbo appends three silence tokens before S3Gen (as upstream does), and its meanflow decoder
        # may end up to one token's worth early
        expected = SAMPLES_PER_TOKEN * (speech_tokens + 3)
        assert expected - SAMPLES_PER_TOKEN <= audio.size <= expected
    else:
        assert audio.size == SAMPLES_PER_TOKEN * speech_tokens


def test_health_metadata_and_info(predictor):
    assert requests.get(f"{predictor.http_url}/v2/health/live").status_code == 200
    assert requests.get(f"{predictor.http_url}/v2/health/ready").json() == {"ready": True}
    for name in ("standard", "turbo", "multilingual"):
        meta = requests.get(f"{predictor.http_url}/v2/models/{name}").json()
        assert meta["name"] == name
        assert {i["name"] for i in meta["inputs"]} == {"text", "audio_prompt"}
        assert meta["outputs"][0]["name"] == "audio"
    info = requests.get(f"{predictor.http_url}/v2/chatterbox/info").json()
    assert info["loaded_models"] == ["standard", "turbo", "multilingual"]
    assert info["device"] == "cpu" and info["sample_rate"] == 24000
    client = grpcclient.InferenceServerClient(predictor.grpc_url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("turbo")


@pytest.mark.parametrize("model", ["standard", "turbo", "multilingual"])
def test_tritonclient_http_returns_audio_of_the_generated_length(predictor, model):
    result = http_infer(predictor.http_url, model, "Hello there.", {**FEW_TOKENS, "voice": "alice.wav"})
    audio = result.as_numpy("audio")
    params = result.get_response()["parameters"]
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert params["sample_rate"] == 24000
    assert 1 <= params["speech_tokens"] <= 4
    assert_length_matches_tokens(model, audio, params["speech_tokens"])
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_binary_tensor_extension(predictor):
    result = http_infer(predictor.http_url, "standard", "Binary please.", FEW_TOKENS, binary=True)
    audio = result.as_numpy("audio")
    assert_length_matches_tokens("standard", audio, result.get_response()["parameters"]["speech_tokens"])


def test_tritonclient_grpc_with_string_numbers_and_audio_prompt(predictor, voices_dir):
    prompt = (voices_dir / "bob.wav").read_bytes()
    result = grpc_infer(
        predictor.grpc_url,
        "turbo",
        "Over gRPC.",
        {"max_new_tokens": 3, "seed": 5, "temperature": 0.7},
        audio_prompt=prompt,
    )
    audio = result.as_numpy("audio")
    tokens = result.get_response().parameters["speech_tokens"].int64_param
    assert_length_matches_tokens("turbo", audio, tokens)
    # The same request over REST, seeded the same, gives the same audio.
    again = http_infer(
        predictor.http_url,
        "turbo",
        "Over gRPC.",
        {"max_new_tokens": 3, "seed": 5, "temperature": 0.7},
        audio_prompt=prompt,
    )
    np.testing.assert_array_equal(again.as_numpy("audio"), audio)


def test_kserve_inference_rest_client(predictor):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.kserve_client_call",
            predictor.http_url,
            "standard",
            "Kserve's own client.",
            json.dumps({"max_new_tokens": 3, "seed": 1}),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["dtype"] == "float32"
    assert result["samples"] == SAMPLES_PER_TOKEN * result["parameters"]["speech_tokens"]


def test_same_seed_same_output_and_builtin_voice(predictor):
    first = http_infer(predictor.http_url, "turbo", "Seeded.", FEW_TOKENS).as_numpy("audio")
    second = http_infer(predictor.http_url, "turbo", "Seeded.", FEW_TOKENS).as_numpy("audio")
    other = http_infer(predictor.http_url, "turbo", "Seeded.", {**FEW_TOKENS, "seed": 12}).as_numpy("audio")
    np.testing.assert_array_equal(first, second)
    assert first.shape != other.shape or not np.array_equal(first, other)


def _error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as error:
        call()
    return error.value


@pytest.mark.parametrize(
    "model,text,params,status,words",
    [
        ("standard", "", {}, "400", "text"),
        ("standard", "x" * 5001, {}, "413", "5000"),
        ("nonexistent", "Hi.", {}, "404", "nonexistent"),
        ("standard", "Hi.", {"temperature": 3.0}, "400", "temperature"),
        ("standard", "Hi.", {"exaggeration": float("nan")}, "400", "exaggeration"),
        ("standard", "Hi.", {"cfg_weight": "lots"}, "400", "cfg_weight"),
        ("standard", "Hi.", {"max_new_tokens": 41}, "400", "max_new_tokens"),
        ("standard", "Hi.", {"bogus": 1}, "400", "bogus"),
        ("standard", "Hi.", {"voice": "../alice.wav"}, "400", "not inside"),
        ("standard", "Hi.", {"voice": "/etc/passwd"}, "400", "not inside"),
        ("standard", "Hi.", {"voice": "missing.wav"}, "400", "not found"),
        ("turbo", "Hi.", {"voice": "short.wav"}, "400", "more than 5 s"),
        ("multilingual", "Hi.", {"language_id": "xx"}, "400", "language_id"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(predictor, model, text, params, status, words):
    error = _error(lambda: http_infer(predictor.http_url, model, text, params))
    assert error.status() == status, error
    assert words in error.message()
    assert requests.get(f"{predictor.http_url}/v2/health/ready").status_code == 200


def test_bad_audio_prompts(predictor):
    error = _error(
        lambda: http_infer(predictor.http_url, "standard", "Hi.", FEW_TOKENS, audio_prompt=b"not audio at all")
    )
    assert error.status() == "400" and "not a readable audio file" in error.message()
    with pytest.raises(InferenceServerException) as raw_bytes:
        grpc_infer(predictor.grpc_url, "standard", "Hi.", FEW_TOKENS, audio_prompt=b"\xff\xfe not audio")
    assert (
        "INVALID_ARGUMENT" in str(raw_bytes.value.status()) and "not a readable audio file" in raw_bytes.value.message()
    )
    # Raw (non-UTF-8) bytes through REST's binary extension: a 400 that says what to do, not kserve's 500.
    error = _error(lambda: http_infer(predictor.http_url, "standard", b"\xff\xfe", FEW_TOKENS, binary=True))
    assert error.status() == "400" and "base64" in error.message()
    with pytest.raises(InferenceServerException) as grpc_error:
        grpc_infer(predictor.grpc_url, "standard", "", FEW_TOKENS)
    assert "INVALID_ARGUMENT" in str(grpc_error.value.status())


def _in_flight(predictor) -> float:
    text = requests.get(f"{predictor.http_url}/metrics").text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("chatterbox_requests_in_flight{")
    )


def test_too_many_requests_get_429_with_a_message(predictor):

    # Turbo: the limit is the predictor's, not a variant's, and turbo's flow takes 2 ODE steps to standard's 10.
    slow = {"max_new_tokens": 20, "seed": 3}  # seconds of work: in flight while the probes are refused
    workers = [
        threading.Thread(target=http_infer, args=(predictor.http_url, "turbo", "Busy.", slow)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 120
    while _in_flight(predictor) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    error = _error(lambda: http_infer(predictor.http_url, "turbo", "One too many.", FEW_TOKENS))
    grpc_status = None
    try:
        grpc_infer(predictor.grpc_url, "turbo", "One too many.", FEW_TOKENS)
    except InferenceServerException as exc:
        grpc_status = str(exc.status())
    for worker in workers:
        worker.join()
    assert error.status() == "429" and "MAX_CONCURRENT_REQUESTS" in error.message()
    assert grpc_status == "StatusCode.RESOURCE_EXHAUSTED"
    assert http_infer(predictor.http_url, "turbo", "Free again.", FEW_TOKENS).as_numpy("audio").size > 0


def test_metrics(predictor, voices_dir):
    # A voice no other test uses: its first call is a cache miss and its second a hit, in any test order.
    write_reference_wav(voices_dir / "metrics-voice.wav", seconds=3.0, seed=77)
    for _ in range(2):
        http_infer(predictor.http_url, "standard", "Count me.", {**FEW_TOKENS, "voice": "metrics-voice.wav"})
    text = requests.get(f"{predictor.http_url}/metrics").text
    for name in (
        'chatterbox_requests_total{model="standard",outcome="ok"}',
        "chatterbox_audio_seconds_total",
        "chatterbox_time_to_first_audio_seconds_bucket",
        "chatterbox_real_time_factor_bucket",
        "chatterbox_speech_tokens_total",
        'chatterbox_voice_cache_total{model="standard",result="hit"}',
        'chatterbox_voice_cache_total{model="standard",result="miss"}',
        "chatterbox_requests_in_flight",
        "request_predict_seconds",
    ):
        assert name in text, name


def test_requests_for_different_variants_do_not_wait_for_each_other(predictor):
    """A long standard request in flight: a short turbo request is served while it still runs (each
    variant's batch steps every scheduler tick), not after it."""
    finished: dict[str, float] = {}

    def call(model: str, params: dict) -> None:
        http_infer(predictor.http_url, model, "Side by side.", params)
        finished[model] = time.monotonic()

    long_standard = threading.Thread(target=call, args=("standard", {"max_new_tokens": 40, "seed": 5}))
    long_standard.start()
    deadline = time.monotonic() + 120
    while not _in_flight(predictor) and time.monotonic() < deadline:
        time.sleep(0.05)
    call("turbo", FEW_TOKENS)
    long_standard.join()
    assert finished["turbo"] < finished["standard"], finished
