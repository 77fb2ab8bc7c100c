"""The Wyoming catalogue (voice names <-> model, language, library voice) and its setting, in-process."""

from __future__ import annotations

import pytest

from adapter.errors import APIError
from adapter.settings import Settings, SettingsError
from adapter.wyoming.catalogue import VoiceChoice, choose, describe
from contract.variants import LANGUAGES

ALL = ["standard", "turbo", "multilingual"]
LIBRARY = [
    {"name": "alice.wav", "turbo_ok": True},
    {"name": "sub/short.wav", "turbo_ok": False},
]


def test_wyoming_port_setting():
    assert Settings.from_env({}).wyoming_port == 10200
    assert Settings.from_env({"WYOMING_PORT": "0"}).wyoming_port == 0
    for bad in ("-1", "70000", "ten"):
        with pytest.raises(SettingsError, match="WYOMING_PORT"):
            Settings.from_env({"WYOMING_PORT": bad})


@pytest.mark.parametrize(
    ("loaded", "name", "language", "expected"),
    [
        (ALL, "turbo/en/alice.wav", None, VoiceChoice("turbo", "en", "alice.wav")),
        (ALL, "multilingual/de/sub/short.wav", None, VoiceChoice("multilingual", "de", "sub/short.wav")),
        (ALL, "standard/en", None, VoiceChoice("standard", "en", None)),
        (ALL, None, None, VoiceChoice("standard", "en", None)),  # the HTTP API's default model
        (["turbo", "multilingual"], None, None, VoiceChoice("turbo", "en", None)),
        (ALL, "alice.wav", None, VoiceChoice("standard", "en", "alice.wav")),  # a bare library name
        (ALL, None, "FR", VoiceChoice("multilingual", "fr", None)),  # a language alone picks a model
        (ALL, "alice.wav", "ja", VoiceChoice("multilingual", "ja", "alice.wav")),
    ],
)
def test_choose(loaded, name, language, expected):
    assert choose(loaded, name, language) == expected


@pytest.mark.parametrize(
    ("loaded", "name", "language", "status", "words"),
    [
        (ALL, "turbo/de/alice.wav", None, 400, "does not speak 'de'"),
        (["standard"], "turbo/en/alice.wav", None, 404, "turbo model is not loaded"),
        (ALL, None, "xx", 400, "'xx' is not one of"),
        (["standard", "turbo"], None, "de", 404, "no loaded model speaks 'de'"),
        ([], None, None, 404, "loaded: none"),
    ],
)
def test_choose_refuses_with_the_http_apis_status(loaded, name, language, status, words):
    with pytest.raises(APIError) as caught:
        choose(loaded, name, language)
    assert caught.value.status == status and words in caught.value.message


def test_describe_offers_every_voice_for_every_language_of_each_loaded_model():
    (program,) = describe(ALL, LIBRARY).tts
    names = [v.name for v in program.voices]
    assert names[:3] == ["standard/en", "standard/en/alice.wav", "standard/en/sub/short.wav"]
    assert "turbo/en/alice.wav" in names and "turbo/en/sub/short.wav" not in names  # turbo: references > 5 s
    assert len(names) == 3 + 2 + 3 * len(LANGUAGES) == len(set(names))
    assert all(len(v.languages) == 1 for v in program.voices)
    # Every listed name is understood by choose(), and means what the listing says.
    for voice in program.voices:
        choice = choose(ALL, voice.name, None)
        assert voice.name.startswith(f"{choice.model}/{choice.language}") and voice.languages == [choice.language]
    assert program.supports_synthesize_streaming


def test_describe_without_models_still_answers():
    (program,) = describe([], LIBRARY).tts
    assert program.voices == []
