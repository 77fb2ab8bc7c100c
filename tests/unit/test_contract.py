"""The shared contract (contract/): one parameter table behind every surface, the typed stream
protocol, and an adapter that imports without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from contract.errors import ServiceError
from contract.params import BY_NAME, PARAMETERS, ParameterError, check_language, defaults_for
from contract.stream import (
    ChunkEvent,
    DoneEvent,
    ErrorEvent,
    EventReader,
    StreamProtocolError,
    encode_event,
    parse_event,
)
from contract.variants import LANGUAGES, SAMPLE_RATE, SAMPLES_PER_TOKEN
from scripts.parameter_table import stale_documents

ROOT = Path(__file__).resolve().parents[2]

# The seed document's table: (range low, high, default).
SEED = {
    "exaggeration": (0.0, 2.0, 0.5),
    "cfg_weight": (0.0, 1.0, 0.5),
    "temperature": (0.1, 1.5, 0.8),
    "top_p": (0.0, 1.0, 0.95),
    "repetition_penalty": (1.0, None, 1.2),
}


def test_the_table_holds_the_seeds_ranges_and_defaults():
    for name, (low, high, default) in SEED.items():
        p = BY_NAME[name]
        assert (p.low, p.default) == (low, default), name
        if high is not None:
            assert p.high == high, name
    assert BY_NAME["seed"].high == 4294967295 and BY_NAME["top_k"].low == 0
    assert len(LANGUAGES) == 23 and SAMPLE_RATE == 24000 and SAMPLES_PER_TOKEN == 960


def test_defaults_for_are_what_an_upstream_call_needs():
    assert defaults_for("turbo") == {"temperature": 0.8, "top_p": 0.95, "top_k": 1000, "repetition_penalty": 1.2}
    assert defaults_for("multilingual")["repetition_penalty"] == 2.0
    assert defaults_for("multilingual")["language_id"] == "en"
    assert "top_k" not in defaults_for("standard") and "language_id" not in defaults_for("standard")


@pytest.mark.parametrize(
    "variant, code, expected",
    [("multilingual", "FR", "fr"), ("standard", "en", "en"), ("turbo", None, "en"), ("standard", "", "en")],
)
def test_language_codes_accepted(variant, code, expected):
    assert check_language(variant, code) == expected


@pytest.mark.parametrize(
    "variant, code, words",
    [
        ("multilingual", "xx", "must be one of"),
        ("standard", "english", "must be one of"),
        ("standard", "fr", "use the multilingual model"),
        ("turbo", "de", "use the multilingual model"),
        ("multilingual", 5, "must be a string"),
    ],
)
def test_language_codes_refused(variant, code, words):
    with pytest.raises(ParameterError, match=words):
        check_language(variant, code)


def test_stream_events_round_trip_through_sse_framing():
    samples = np.array([0.25, -0.5, 1.0], dtype=np.float32)
    wire = b"".join(
        [
            b": a comment line\n\n",
            encode_event(ChunkEvent.from_samples(0, samples, final=True)),
            encode_event(DoneEvent(chunks=1, duration_seconds=3 / SAMPLE_RATE, speech_tokens=1, seed=7)),
            encode_event(ErrorEvent(code=400, message="bad")),
        ]
    )
    reader = EventReader()
    events = [e for line in wire.decode().split("\n") if (e := reader.feed(line)) is not None]
    assert [type(e) for e in events] == [ChunkEvent, DoneEvent, ErrorEvent]
    np.testing.assert_array_equal(events[0].samples(), samples)
    assert events[0].final and events[1].seed == 7 and events[2].message == "bad"


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        '{"type": "chunk"}',
        '{"type": "nope"}',
        '{"type": "done", "chunks": 1}',
        "[1]",
    ],
)
def test_malformed_events_are_a_protocol_error(data):
    with pytest.raises(StreamProtocolError):
        parse_event(data)


def test_chunk_audio_must_be_base64_float32_at_the_model_rate():
    with pytest.raises(StreamProtocolError):
        ChunkEvent(index=0, audio_b64="%%%").samples()
    with pytest.raises(StreamProtocolError):
        ChunkEvent(index=0, audio_b64="AAAA", sample_rate=16000).samples()


def test_service_error_carries_status_then_message():
    exc = ServiceError(413, "too long")
    assert (exc.status, exc.message, str(exc)) == (413, "too long", "too long")


def test_readme_and_docs_show_the_parameter_table():
    assert stale_documents(ROOT) == [], "run `python -m scripts.parameter_table` to regenerate the tables"


def test_adapter_openapi_shows_the_tables_ranges_and_defaults():
    from adapter.app import create_app
    from adapter.settings import Settings

    schema = create_app(Settings()).openapi()
    voice = schema["components"]["schemas"]["VoiceOptions"]["properties"]
    for p in PARAMETERS:
        if p.name == "language_id":
            continue
        field = voice[p.name]
        bounds = field if "anyOf" not in field else field["anyOf"][0]
        assert field.get("default") == p.default, p.name
        assert bounds.get("minimum") == p.low and bounds.get("maximum") == p.high, p.name
    for name, (low, high, default) in SEED.items():
        assert (voice[name]["minimum"], voice[name].get("maximum"), voice[name]["default"]) == (
            low,
            high or 10.0,
            default,
        )
    language = schema["components"]["schemas"]["TTSRequest"]["properties"]["language_id"]
    assert language["default"] == "en" and language["enum"] == list(LANGUAGES)


def test_the_adapter_imports_without_torch_and_without_the_predictor():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any `import torch` now fails
        import adapter.__main__, adapter.app
        loaded = sorted(m for m in sys.modules if m == "predictor" or m.startswith("predictor."))
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
