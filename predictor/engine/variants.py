"""What differs between the three Chatterbox variants: classes, weight files, hub repos, defaults."""

from __future__ import annotations

from dataclasses import dataclass

VARIANT_NAMES = ("standard", "turbo", "multilingual")

MULTILINGUAL_LANGUAGES = (
    "ar",
    "da",
    "de",
    "el",
    "en",
    "es",
    "fi",
    "fr",
    "he",
    "hi",
    "it",
    "ja",
    "ko",
    "ms",
    "nl",
    "no",
    "pl",
    "pt",
    "ru",
    "sv",
    "sw",
    "tr",
    "zh",
)


@dataclass(frozen=True)
class VariantSpec:
    name: str
    module: str  # chatterbox module holding the model class
    class_name: str
    hub_repo: str
    # Files `from_local` reads; the first must exist for a folder to count as this variant's weights.
    required_files: tuple[str, ...]
    # Generation defaults, as upstream's generate() has them.
    default_top_p: float
    default_min_p: float
    default_repetition_penalty: float
    uses_cfg: bool  # standard and multilingual run classifier-free guidance; turbo ignores cfg/exaggeration/min_p
    min_reference_seconds: float  # turbo's prepare_conditionals asserts a reference longer than 5 s


VARIANTS: dict[str, VariantSpec] = {
    "standard": VariantSpec(
        name="standard",
        module="chatterbox.tts",
        class_name="ChatterboxTTS",
        hub_repo="ResembleAI/chatterbox",
        required_files=("t3_cfg.safetensors", "ve.safetensors", "s3gen.safetensors", "tokenizer.json"),
        default_top_p=1.0,
        default_min_p=0.05,
        default_repetition_penalty=1.2,
        uses_cfg=True,
        min_reference_seconds=0.0,
    ),
    "turbo": VariantSpec(
        name="turbo",
        module="chatterbox.tts_turbo",
        class_name="ChatterboxTurboTTS",
        hub_repo="ResembleAI/chatterbox-turbo",
        required_files=("t3_turbo_v1.safetensors", "ve.safetensors", "s3gen_meanflow.safetensors"),
        default_top_p=0.95,
        default_min_p=0.0,
        default_repetition_penalty=1.2,
        uses_cfg=False,
        min_reference_seconds=5.0,
    ),
    "multilingual": VariantSpec(
        name="multilingual",
        module="chatterbox.mtl_tts",
        class_name="ChatterboxMultilingualTTS",
        hub_repo="ResembleAI/chatterbox",
        required_files=("t3_mtl23ls_v2.safetensors", "ve.pt", "s3gen.pt", "grapheme_mtl_merged_expanded_v1.json"),
        default_top_p=1.0,
        default_min_p=0.05,
        default_repetition_penalty=2.0,
        uses_cfg=True,
        min_reference_seconds=0.0,
    ),
}
