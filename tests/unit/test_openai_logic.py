"""adapter/openai: model names to variants, voice names to the library, the request's extra fields."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from adapter.errors import APIError
from adapter.openai.protocol import OPENAI_VOICES, SpeechRequest, VoiceId
from adapter.openai.serving import ModelResolver, list_voices, parse_model_map, resolve_voice, speech_request
from adapter.schemas import VoiceOptions
from adapter.voice_library import VoiceLibrary
from tests.support.servers import make_audio


class LoadedModels:
    """The one predictor call the resolver makes."""

    def __init__(self, *loaded: str):
        self.loaded = list(loaded)

    async def info(self) -> dict:
        return {"loaded_models": self.loaded}


def resolve(model: str, *loaded: str, mapping: str | None = None) -> str:
    return asyncio.run(ModelResolver(parse_model_map(mapping), LoadedModels(*loaded)).resolve(model))


@pytest.mark.parametrize(
    "model, loaded, variant",
    [
        ("tts-1", ("standard", "turbo"), "turbo"),
        ("tts-1", ("standard",), "standard"),
        ("tts-1-hd", ("standard", "turbo"), "standard"),
        ("gpt-4o-mini-tts", ("standard", "turbo", "multilingual"), "standard"),
        ("multilingual", ("standard", "multilingual"), "multilingual"),
        ("turbo", ("turbo",), "turbo"),
    ],
)
def test_openai_model_names_map_to_loaded_variants(model, loaded, variant):
    assert resolve(model, *loaded) == variant


@pytest.mark.parametrize(
    "model, loaded, served",
    [
        ("whisper-1", ("standard",), "tts-1, tts-1-hd, gpt-4o-mini-tts, gpt-4o-mini-tts-2025-12-15, standard"),
        ("tts-1-hd", ("turbo",), "tts-1, turbo"),
        ("turbo", ("standard",), "tts-1, tts-1-hd, gpt-4o-mini-tts, gpt-4o-mini-tts-2025-12-15, standard"),
    ],
)
def test_a_model_not_served_is_a_400_listing_what_is(model, loaded, served):
    with pytest.raises(APIError) as caught:
        resolve(model, *loaded)
    assert caught.value.status == 400
    assert caught.value.message == f"model '{model}' is not served here; served models: {served}"


def test_the_mapping_is_configurable():
    mapping = '{"tts-1": "multilingual", "my-voice-model": ["turbo", "standard"]}'
    assert resolve("tts-1", "standard", "multilingual", mapping=mapping) == "multilingual"
    assert resolve("my-voice-model", "standard", mapping=mapping) == "standard"
    assert resolve("tts-1-hd", "standard", mapping=mapping) == "standard"  # defaults stay


@pytest.mark.parametrize(
    "raw, words",
    [
        ("{nope", "not valid JSON"),
        ('["tts-1"]', "JSON object"),
        ('{"tts-1": "huge"}', "variant"),
        ('{"turbo": "standard"}', "redefine"),
    ],
)
def test_a_bad_mapping_is_a_configuration_error(raw, words):
    with pytest.raises(ValueError, match=words):
        parse_model_map(raw)


@pytest.fixture
def library(tmp_path) -> VoiceLibrary:
    (tmp_path / "alice.wav").write_bytes(make_audio(3))
    (tmp_path / "nova.flac").write_bytes(make_audio(3, fmt="FLAC"))
    return VoiceLibrary(str(tmp_path), None, 1.0, 60.0)


@pytest.mark.parametrize(
    "voice, resolved",
    [
        ("alice.wav", "alice.wav"),
        ("alice", "alice.wav"),
        (VoiceId(id="alice"), "alice.wav"),
        ("alloy", None),  # an OpenAI name: the default voice
        ("Shimmer", None),
        ("nova", "nova.flac"),  # the library holds a voice of that name: it wins
    ],
)
def test_voices_resolve_to_the_library_or_the_default(library, voice, resolved):
    assert resolve_voice(library, voice) == resolved


@pytest.mark.parametrize("voice, status", [("bob", 400), ("bob.wav", 400), ("../etc/passwd", 400)])
def test_unknown_voices_are_refused(library, voice, status):
    with pytest.raises(APIError) as caught:
        resolve_voice(library, voice)
    assert caught.value.status == status


def test_voice_list_has_the_library_then_the_openai_names(library):
    voices = list_voices(library)
    assert [(v.id, v.library) for v in voices[:2]] == [("alice.wav", True), ("nova.flac", True)]
    openai_names = [v.id for v in voices if not v.library]
    assert "alloy" in openai_names and "nova" not in openai_names
    assert len(openai_names) == len(OPENAI_VOICES) - 1


def test_chatterbox_parameters_keep_the_seed_apis_names_and_ranges():
    for name, info in VoiceOptions.model_fields.items():
        if name != "audio_prompt_path":
            assert SpeechRequest.model_fields[name].metadata == info.metadata
    body = SpeechRequest(model="tts-1", input="hi", voice="alloy", exaggeration=0.7, seed=3, language_id="fr")
    (segment,) = speech_request(body, "multilingual", None).segments
    assert segment.parameters == {"exaggeration": 0.7, "seed": 3} and segment.language_id == "fr"
    with pytest.raises(ValidationError, match="less than or equal to 2"):
        SpeechRequest(model="tts-1", input="hi", voice="alloy", exaggeration=2.5)


@pytest.mark.parametrize(
    "field", [{"speed": 4.5}, {"speed": 0.2}, {"response_format": "ogg"}, {"stream_format": "x"}, {"temprature": 1}]
)
def test_openai_fields_are_validated(field):
    with pytest.raises(ValidationError):
        SpeechRequest(model="tts-1", input="hi", voice="alloy", **field)


def test_defaults_are_openais():
    body = SpeechRequest(model="tts-1", input="hi", voice="alloy", instructions="Speak cheerfully")
    assert (body.response_format, body.speed, body.stream_format) == ("mp3", 1.0, "audio")
