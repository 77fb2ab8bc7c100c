"""Wyoming voices: each (model, language, library voice) the predictor can speak, as one named voice.

Home Assistant sends only the voice's name with a request (never the pipeline's language), so the
name has to carry the model and the language: `<model>/<language>/<voice>`, e.g. `turbo/en/alice.wav`
or `multilingual/de/alice.wav`; `<model>/<language>` alone means the default voice (DEFAULT_VOICE or
the one set through the API, else the model's built-in voice). A bare library name (`alice.wav`) or a
request with only a language is also understood.
"""

from __future__ import annotations

from dataclasses import dataclass

from wyoming.info import Attribution, Info, TtsProgram, TtsVoice

from adapter import __version__
from adapter.errors import APIError
from contract.params import BY_NAME
from contract.variants import ENGLISH_ONLY_LANGUAGE, LANGUAGES, VARIANT_NAMES

PROGRAM_NAME = "chatterbox"
ENGLISH = ENGLISH_ONLY_LANGUAGE
# A request that names no model goes to the first of these that is loaded and speaks its language:
# the HTTP API's default model first.
MODEL_PREFERENCE = VARIANT_NAMES
MODEL_LANGUAGES: dict[str, tuple[str, ...]] = {
    model: LANGUAGES if model in BY_NAME["language_id"].variants else (ENGLISH,) for model in VARIANT_NAMES
}
_ATTRIBUTION = Attribution(name="Resemble AI", url="https://github.com/resemble-ai/chatterbox")


@dataclass(frozen=True)
class VoiceChoice:
    model: str
    language: str
    voice: str | None  # a library voice name; None: the default voice


def voice_name(model: str, language: str, voice: str | None) -> str:
    return f"{model}/{language}" if voice is None else f"{model}/{language}/{voice}"


def _ordered(loaded_models: list[str]) -> list[str]:
    return [m for m in MODEL_PREFERENCE if m in loaded_models]


def choose(loaded_models: list[str], name: str | None, language: str | None) -> VoiceChoice:
    """The model, language and voice for a request's voice name (or language); APIError when no loaded
    model can speak it."""
    if name:
        model, _, rest = name.partition("/")
        if model in MODEL_LANGUAGES:
            named_language, _, voice = rest.partition("/")
            if named_language not in MODEL_LANGUAGES[model]:
                raise APIError(400, f"voice {name!r}: the {model} model does not speak {named_language!r}")
            if model not in loaded_models:
                raise APIError(404, f"voice {name!r}: the {model} model is not loaded")
            return VoiceChoice(model, named_language, voice or None)
    wanted = (language or ENGLISH).lower()
    if not any(wanted in languages for languages in MODEL_LANGUAGES.values()):
        raise APIError(400, f"language {wanted!r} is not one of {', '.join(LANGUAGES)}")
    for model in _ordered(loaded_models):
        if wanted in MODEL_LANGUAGES[model]:
            return VoiceChoice(model, wanted, name or None)
    raise APIError(404, f"no loaded model speaks {wanted!r} (loaded: {', '.join(loaded_models) or 'none'})")


def describe(loaded_models: list[str], voices: list[dict]) -> Info:
    """`voices`: the library's listing (adapter.voice_library.VoiceLibrary.list_voices)."""
    entries: list[TtsVoice] = []
    for model in _ordered(loaded_models):
        usable = [v for v in voices if model != "turbo" or v.get("turbo_ok")]
        for language in MODEL_LANGUAGES[model]:
            entries.append(_voice(model, language, None, f"default voice ({model}, {language})"))
            entries.extend(
                _voice(model, language, v["name"], f"{v['name'].rsplit('.', 1)[0]} ({model}, {language})")
                for v in usable
            )
    program = TtsProgram(
        name=PROGRAM_NAME,
        description="Chatterbox TTS (Resemble AI) through chatterbox-serve",
        attribution=_ATTRIBUTION,
        installed=True,
        version=__version__,
        voices=entries,
        supports_synthesize_streaming=True,
    )
    return Info(tts=[program])


def _voice(model: str, language: str, voice: str | None, description: str) -> TtsVoice:
    return TtsVoice(
        name=voice_name(model, language, voice),
        description=description,
        attribution=_ATTRIBUTION,
        installed=True,
        version=__version__,
        languages=[language],
    )
