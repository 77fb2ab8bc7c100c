"""What the predictor needs to load and run each variant: upstream classes, weight files, hub repos,
and the ways the variants differ that the engine follows (fields here, not branches on the name).

Facts the adapter shares (names, languages, sample rate, reference minimum, parameter defaults)
live in contract/. The weight file lists here are the only ones: the weight finder (weights.py) and
the random-weight writer (scripts/random_weights.py) read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from contract.params import CFG_VARIANTS
from contract.tags import is_tag
from contract.variants import MIN_REFERENCE_SECONDS

# The built-in voice's conditionals; optional for every variant (without it a request needs a voice).
BUILTIN_VOICE_FILE = "conds.pt"

# How a variant turns text into T3's text tokens:
# "gpt2": a GPT-2 BPE tokenizer (transformers), whose added tokens are turbo's [tags];
# "grapheme": Chatterbox's character-level EnTokenizer;
# "grapheme_per_language": the multilingual grapheme tokenizer, which takes the language_id.
TextTokenizer = Literal["gpt2", "grapheme", "grapheme_per_language"]


@dataclass(frozen=True)
class VariantSpec:
    name: str
    module: str  # chatterbox module holding the model class
    class_name: str
    hub_repo: str
    # Files `from_local` reads; all must exist for a folder to count as this variant's weights.
    required_files: tuple[str, ...]
    text_tokenizer: TextTokenizer
    # Files read when present (the built-in voice, the Chinese table) and so fetched from the hub too.
    optional_files: tuple[str, ...] = (BUILTIN_VOICE_FILE,)
    # Glob patterns for the hub download where names cannot be listed (turbo's tokenizer files
    # depend on the transformers version that saved them); empty: required + optional files by name.
    hub_globs: tuple[str, ...] = ()
    # A request must name a language (the tokenizer prepends its [xx] token); warm-up uses English.
    requires_language: bool = False
    # The tokenizer segments Chinese with a package the server may lack (upstream_patches.py).
    segments_chinese: bool = False
    # Upstream's alignment analyzer watches the attention of some heads to stop runaway generations:
    # the backbone runs eager attention with attention outputs, and each request gets an analyzer.
    alignment_analysis: bool = False
    # S3Gen is the meanflow one: 2 ODE steps, and the speech ends with silence tokens.
    meanflow_vocoder: bool = False
    # T3 is GPT-2 shaped without CFG, so its decoding fits the CUDA-graph static batch (static_batch.py).
    static_batch: bool = False

    @property
    def uses_cfg(self) -> bool:
        """Standard and multilingual run classifier-free guidance; turbo ignores cfg/exaggeration/min_p."""
        return self.name in CFG_VARIANTS

    @property
    def min_reference_seconds(self) -> float:
        return MIN_REFERENCE_SECONDS[self.name]

    def tags_of(self, model: Any) -> tuple[str, ...]:
        """The [tags] the loaded model's tokenizer knows, in id order: the added tokens of a GPT-2
        tokenizer that have a tag's shape (contract/tags.py). The grapheme tokenizers' added tokens
        ([START], [SPACE], [en]...) are controls the text path inserts itself, not tags for clients."""
        if self.text_tokenizer != "gpt2":
            return ()
        added = model.tokenizer.get_added_vocab()
        return tuple(token for token in sorted(added, key=added.__getitem__) if is_tag(token))

    @property
    def hub_patterns(self) -> list[str]:
        """What to fetch from `hub_repo`."""
        return list(self.hub_globs or self.required_files + self.optional_files)


VARIANT_SPECS: dict[str, VariantSpec] = {
    "standard": VariantSpec(
        name="standard",
        module="chatterbox.tts",
        class_name="ChatterboxTTS",
        hub_repo="ResembleAI/chatterbox",
        required_files=("t3_cfg.safetensors", "ve.safetensors", "s3gen.safetensors", "tokenizer.json"),
        text_tokenizer="grapheme",
    ),
    "turbo": VariantSpec(
        name="turbo",
        module="chatterbox.tts_turbo",
        class_name="ChatterboxTurboTTS",
        hub_repo="ResembleAI/chatterbox-turbo",
        required_files=("t3_turbo_v1.safetensors", "ve.safetensors", "s3gen_meanflow.safetensors"),
        text_tokenizer="gpt2",
        hub_globs=("*.safetensors", "*.json", "*.txt", "*.pt", "*.model"),  # upstream's from_pretrained's
        meanflow_vocoder=True,
        static_batch=True,
    ),
    "multilingual": VariantSpec(
        name="multilingual",
        module="chatterbox.mtl_tts",
        class_name="ChatterboxMultilingualTTS",
        hub_repo="ResembleAI/chatterbox",
        required_files=("t3_mtl23ls_v2.safetensors", "ve.pt", "s3gen.pt", "grapheme_mtl_merged_expanded_v1.json"),
        text_tokenizer="grapheme_per_language",
        optional_files=(BUILTIN_VOICE_FILE, "Cangjie5_TC.json"),
        requires_language=True,
        segments_chinese=True,
        alignment_analysis=True,
    ),
}
