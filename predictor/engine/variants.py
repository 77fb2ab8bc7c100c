"""What the predictor needs to load each variant: upstream classes, weight files, hub repos.

Facts the adapter shares (names, languages, sample rate, reference minimum, parameter defaults)
live in contract/.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.params import CFG_VARIANTS
from contract.variants import MIN_REFERENCE_SECONDS


@dataclass(frozen=True)
class VariantSpec:
    name: str
    module: str  # chatterbox module holding the model class
    class_name: str
    hub_repo: str
    # Files `from_local` reads; the first must exist for a folder to count as this variant's weights.
    required_files: tuple[str, ...]

    @property
    def uses_cfg(self) -> bool:
        """Standard and multilingual run classifier-free guidance; turbo ignores cfg/exaggeration/min_p."""
        return self.name in CFG_VARIANTS

    @property
    def min_reference_seconds(self) -> float:
        return MIN_REFERENCE_SECONDS[self.name]


VARIANT_SPECS: dict[str, VariantSpec] = {
    "standard": VariantSpec(
        name="standard",
        module="chatterbox.tts",
        class_name="ChatterboxTTS",
        hub_repo="ResembleAI/chatterbox",
        required_files=("t3_cfg.safetensors", "ve.safetensors", "s3gen.safetensors", "tokenizer.json"),
    ),
    "turbo": VariantSpec(
        name="turbo",
        module="chatterbox.tts_turbo",
        class_name="ChatterboxTurboTTS",
        hub_repo="ResembleAI/chatterbox-turbo",
        required_files=("t3_turbo_v1.safetensors", "ve.safetensors", "s3gen_meanflow.safetensors"),
    ),
    "multilingual": VariantSpec(
        name="multilingual",
        module="chatterbox.mtl_tts",
        class_name="ChatterboxMultilingualTTS",
        hub_repo="ResembleAI/chatterbox",
        required_files=("t3_mtl23ls_v2.safetensors", "ve.pt", "s3gen.pt", "grapheme_mtl_merged_expanded_v1.json"),
    ),
}
