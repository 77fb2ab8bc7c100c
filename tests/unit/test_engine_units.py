"""Unit tests of the engine's pure parts: parameter parsing, text splitting, voice-name safety."""

from __future__ import annotations

import math
import os

import pytest

from contract.voice_paths import VoicePathError, resolve_voice_path, safe_voice_filename
from predictor.engine.params import ParameterError, parse_params
from predictor.engine.text import split_text


def test_defaults_follow_the_seed_per_variant():
    standard = parse_params("standard", {}, 1000)
    assert (standard.exaggeration, standard.cfg_weight, standard.temperature) == (0.5, 0.5, 0.8)
    assert (standard.top_p, standard.min_p, standard.repetition_penalty) == (0.95, 0.05, 1.2)
    turbo = parse_params("turbo", {}, 1000)
    assert (turbo.top_p, turbo.top_k, turbo.repetition_penalty) == (0.95, 1000, 1.2)
    assert parse_params("turbo", {"top_k": 0}, 1000).top_k == 0  # 0 disables top-k
    assert parse_params("multilingual", {}, 1000).repetition_penalty == 2.0  # upstream's, documented
    assert parse_params("multilingual", {}, 1000).language_id == "en"
    assert standard.max_new_tokens == 1000


def test_numbers_as_strings_are_accepted():
    params = parse_params("standard", {"temperature": "0.7", "seed": "42", "max_new_tokens": "5"}, 1000)
    assert (params.temperature, params.seed, params.max_new_tokens) == (0.7, 42, 5)


@pytest.mark.parametrize(
    "field,value",
    [
        ("exaggeration", 2.5),
        ("cfg_weight", -0.1),
        ("temperature", 0.05),
        ("temperature", math.nan),
        ("top_p", 1.5),
        ("repetition_penalty", 0.9),
        ("min_p", "abc"),
        ("seed", -1),
        ("seed", 1.5),
        ("max_new_tokens", 0),
        ("max_new_tokens", 1001),
        ("temperature", True),
        ("top_k", [1]),
    ],
)
def test_out_of_range_or_wrong_type_names_the_field(field, value):
    with pytest.raises(ParameterError) as error:
        parse_params("standard", {field: value}, 1000)
    assert error.value.field == field
    assert field in str(error.value)


def test_language_ids():
    assert parse_params("multilingual", {"language_id": "FR"}, 1000).language_id == "fr"
    with pytest.raises(ParameterError, match="language_id"):
        parse_params("multilingual", {"language_id": "xx"}, 1000)
    with pytest.raises(ParameterError, match="multilingual"):
        parse_params("standard", {"language_id": "fr"}, 1000)
    with pytest.raises(ParameterError, match="must be one of"):
        parse_params("turbo", {"language_id": "english"}, 1000)  # a typo no longer passes silently
    assert parse_params("standard", {"language_id": "en"}, 1000).language_id is None


def test_split_keeps_text_and_order():
    text = "First sentence here. Second one! A third? " + "word " * 120 + "end."
    pieces = split_text(text)
    assert " ".join(pieces).split() == text.split()
    assert all(len(p) <= 300 for p in pieces)
    assert pieces[0].startswith("First")


def test_a_long_sentence_is_never_cut_inside_a_tag():
    """Turbo's `[clear throat]` has a space; wherever the cut would fall, the tag stays in one piece."""
    for offset in range(12):
        text = "word " * (58 + offset) + "[clear throat] " + "word " * 60 + "end"
        pieces = split_text(text)
        assert all(len(p) <= 300 for p in pieces) and len(pieces) > 1
        assert sum(piece.count("[clear throat]") for piece in pieces) == 1, pieces


def test_split_short_and_unbroken_text():
    assert split_text("Hi.") == ["Hi."]
    assert split_text("   ") == []
    long_run = "x" * 700
    assert "".join(split_text(long_run)) == long_run


def test_voice_paths_stay_inside(tmp_path):
    voices = tmp_path / "voices"
    voices.mkdir()
    (voices / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    os.symlink(tmp_path / "secret.wav", voices / "link.wav")
    assert resolve_voice_path(voices, "a.wav") == (voices / "a.wav").resolve()
    assert resolve_voice_path(voices, str(voices / "a.wav")) == (voices / "a.wav").resolve()
    messages = set()
    for name in ("../secret.wav", "../missing.wav", str(tmp_path / "secret.wav"), "/etc/passwd", "link.wav"):
        with pytest.raises(VoicePathError) as error:
            resolve_voice_path(voices, name)
        messages.add(str(error.value).replace(name, "NAME"))
    assert len(messages) == 1  # the same answer whether or not the outside file exists
    with pytest.raises(VoicePathError) as missing:
        resolve_voice_path(voices, "nope.wav")
    assert missing.value.not_found


def test_safe_upload_names():
    assert safe_voice_filename("../../etc/My Voice.WAV") == "My Voice.wav"
    assert safe_voice_filename("a;b.flac") == "a_b.flac"
    for bad in ("noext", "x.txt", ".wav", "..", ""):
        with pytest.raises(VoicePathError):
            safe_voice_filename(bad)


def _prepared_voices(cache, count: int) -> list[str]:
    """Prepare `count` distinct voices; returns the paths each preparation was given (its calls)."""
    from predictor.engine.voices import voice_from_bytes

    calls: list[str] = []
    for n in range(count):
        cache.get_or_prepare("turbo", voice_from_bytes(f"voice {n}".encode()), calls.append)
    return calls


def test_the_voice_cache_evicts_the_least_recently_used(monkeypatch):
    from predictor.engine.voices import LEAK_VOICES_SWITCH, ConditionalsCache, voice_from_bytes

    monkeypatch.delenv(LEAK_VOICES_SWITCH, raising=False)
    cache = ConditionalsCache(2)
    assert len(_prepared_voices(cache, 3)) == 3
    assert len(cache._entries) == 2 and cache._pinned == []
    again: list[str] = []
    cache.get_or_prepare("turbo", voice_from_bytes(b"voice 0"), again.append)
    assert len(again) == 1, "the oldest voice was evicted and is prepared again"


def test_the_test_only_leak_switch_keeps_every_voice_and_request(monkeypatch):
    """The soak's negative control (scripts/soak.py) depends on it."""
    from predictor.engine.voices import LEAK_VOICES_SWITCH, ConditionalsCache, voice_from_bytes

    monkeypatch.setenv(LEAK_VOICES_SWITCH, "1")
    cache = ConditionalsCache(2)
    _prepared_voices(cache, 3)
    cache.get_or_prepare("turbo", voice_from_bytes(b"voice 0"), lambda path: pytest.fail("prepared again"))
    assert len(cache._entries) == 3 and len(cache._pinned) == 4
