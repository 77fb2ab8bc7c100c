"""Random-weight Chatterbox checkpoints for tests that need no real weights.

Each variant is written in exactly the file layout its upstream `from_local(ckpt_dir, device)`
reads, so tests exercise the real loading code. The voices are nonsense, the shapes are real.

    python -m scripts.random_weights --out DIR [--variants standard,turbo,multilingual] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from contract.variants import LANGUAGES, VARIANT_NAMES
from predictor.engine.variants import BUILTIN_VOICE_FILE, VARIANT_SPECS

# Before anything imports huggingface_hub, which reads this once: the builders must never reach
# the network (the multilingual tokenizer tries to fetch a Cangjie table and copes without it).
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import soundfile as sf

# The GPT-2 tokenizer files the turbo builder writes (the hub's names vary with the transformers
# version that saved them, so the variant's spec does not list them).
TURBO_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "added_tokens.json")

# Turbo's paralinguistic and delivery tags: the added tokens (ids 50257-50275, after GPT-2's 50257)
# of added_tokens.json in ResembleAI/chatterbox-turbo. The random-weight tokenizer carries the same
# ones, so the tag checks run through a real tokenizer.
TURBO_TAGS = (
    "[laugh]",
    "[chuckle]",
    "[gasp]",
    "[cough]",
    "[sigh]",
    "[groan]",
    "[sniff]",
    "[shush]",
    "[clear throat]",
    "[angry]",
    "[crying]",
    "[dramatic]",
    "[fear]",
    "[happy]",
    "[narration]",
    "[sarcastic]",
    "[surprised]",
    "[whispering]",
    "[advertisement]",
)


def expected_files(variant: str) -> tuple[str, ...]:
    """What a finished folder holds: a variant folder only appears by rename once it is whole; this
    lets a later run tell a folder someone emptied by hand (or an older tokenizer) from a finished one."""
    spec = VARIANT_SPECS[variant]
    tokenizer = TURBO_TOKENIZER_FILES if spec.text_tokenizer == "gpt2" else ()
    return spec.required_files + tokenizer + (BUILTIN_VOICE_FILE,)


# Ids the text side of T3Config hard-codes for standard and multilingual.
STOP_ID, UNK_ID, SPACE_ID, START_ID = 0, 1, 2, 255
OTHER_SPECIALS = ["[PAD]", "[SEP]", "[CLS]", "[MASK]"]
MTL_LANGUAGES = list(LANGUAGES)  # the tokenizer gets a [xx] token for each of the 23 codes

EOS = "<|endoftext|>"
TURBO_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello there! This is a test of the speech server, running with random weights.",
    'Numbers like 1, 2, 3 and 42 appear in text too; so do questions? And quotes: "yes".',
    "Sphinx of black quartz, judge my vow. Pack my box with five dozen liquor jugs.",
]


def write_reference_wav(path, seconds: float = 6.0, sample_rate: int = 24000, seed: int = 0) -> Path:
    """Write a deterministic voice-like wav; different seeds give different "speakers".

    A harmonic tone with vibrato and a syllable-rate envelope gives the speaker encoder, the speech
    tokenizer and the loudness meter something that is neither silence nor pure noise.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = rng.uniform(100.0, 240.0)
    pitch = f0 * (1.0 + 0.03 * np.sin(2 * np.pi * rng.uniform(4.0, 6.0) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    decay = rng.uniform(0.5, 0.8)
    wav = sum(decay**k * np.sin((k + 1) * phase) for k in range(8))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t) ** 2
    wav = wav * envelope + 0.02 * rng.standard_normal(t.size)
    wav = 0.5 * wav / np.max(np.abs(wav))
    path = Path(path)
    sf.write(str(path), wav.astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def _log(message: str) -> None:
    print(f"[random_weights] {message}", file=sys.stderr, flush=True)


def _save_safetensors(module, path: Path) -> None:
    from safetensors.torch import save_file

    # save_file rejects views; none of these modules share storage today, and if one ever does
    # save_file fails loudly rather than silently dropping a key that strict loading wants.
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))


def _char_tokenizer(path: Path, chars: list[str], extra_specials: list[str]) -> int:
    """Write a character-level tokenizer in the grapheme style Chatterbox uses; return its size.

    BPE without merges maps each character to its own id and unknown ones to [UNK]; the specials
    are added tokens so "[SPACE]" and language tags like "[en]" are matched whole in the text.
    """
    from tokenizers import Tokenizer, models

    vocab = {"[STOP]": STOP_ID, "[UNK]": UNK_ID, "[SPACE]": SPACE_ID}
    for token in OTHER_SPECIALS + extra_specials:
        vocab[token] = len(vocab)
    next_id = len(vocab)
    for ch in chars:
        if next_id == START_ID:  # leave the hard-coded start id for [START]
            vocab["[START]"] = START_ID
            next_id += 1
        if ch not in vocab:
            vocab[ch] = next_id
            next_id += 1
    vocab.setdefault("[START]", START_ID)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.add_special_tokens(["[START]", "[STOP]", "[UNK]", "[SPACE]"] + OTHER_SPECIALS + extra_specials)
    tok.save(str(path))
    return max(vocab.values()) + 1


def _printable(start: int, stop: int) -> list[str]:
    import unicodedata

    return [chr(c) for c in range(start, stop) if unicodedata.category(chr(c))[0] not in "CZ"]


def _write_en_tokenizer(path: Path) -> None:
    size = _char_tokenizer(path, _printable(0x21, 0x7F) + _printable(0xA1, 0x250), [])
    assert size <= 704, size


def _write_mtl_tokenizer(path: Path) -> None:
    # Scripts the supported languages reach after lowercasing and NFKD (hence combining marks,
    # Hangul jamo and kana), plus the [cj_*] codes the Chinese path emits.
    blocks = [
        (0x21, 0x7F),
        (0xA1, 0x180),
        (0x300, 0x370),
        (0x370, 0x400),
        (0x400, 0x460),
        (0x590, 0x600),
        (0x600, 0x700),
        (0x900, 0x980),
        (0x1100, 0x1200),
        (0x3040, 0x3100),
    ]
    chars = [c for a, b in blocks for c in _printable(a, b)]
    cangjie = [f"[cj_{c}]" for c in "abcdefghijklmnopqrstuvwxyz."]
    size = _char_tokenizer(path, chars, [f"[{lang}]" for lang in MTL_LANGUAGES] + cangjie)
    assert size <= 2454, size


def _write_turbo_tokenizer(folder: Path) -> None:
    """A small byte-level BPE in GPT-2's format; upstream only warns that it is not 50276 long."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]  # a lazy alias in transformers 5, absent from its type hints

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=[EOS], show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TURBO_CORPUS, trainer)
    tok.add_tokens(list(TURBO_TAGS))  # matched whole in the text, as in the real tokenizer
    # transformers 5 writes only tokenizer.json + tokenizer_config.json; vocab.json, merges.txt,
    # added_tokens.json and special_tokens_map.json are what older GPT-2 loaders look for.
    GPT2TokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS).save_pretrained(folder)
    tok.model.save(str(folder))
    added = {tag: tok.token_to_id(tag) for tag in TURBO_TAGS}
    (folder / "added_tokens.json").write_text(json.dumps(added, indent=2))
    specials = {"bos_token": EOS, "eos_token": EOS, "unk_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))


def _turbo_config():
    from chatterbox.models.t3.modules.t3_config import T3Config

    # Mirrors ChatterboxTurboTTS.from_local, which builds this config inline.
    hp = T3Config(text_tokens_dict_size=50276)
    hp.llama_config_name = "GPT2_medium"
    hp.speech_tokens_dict_size = 6563
    hp.input_pos_emb = None
    hp.speech_cond_prompt_len = 375
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
    return hp


def _build(variant: str, folder: Path, reference_wav: Path) -> None:
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.voice_encoder import VoiceEncoder

    ve = VoiceEncoder()
    if variant == "standard":
        from chatterbox.tts import ChatterboxTTS as cls

        t3, s3gen = T3(), S3Gen()
        _save_safetensors(ve, folder / "ve.safetensors")
        _save_safetensors(t3, folder / "t3_cfg.safetensors")
        _save_safetensors(s3gen, folder / "s3gen.safetensors")
        _write_en_tokenizer(folder / "tokenizer.json")
    elif variant == "turbo":
        from chatterbox.tts_turbo import ChatterboxTurboTTS as cls

        # Saved with tfmr.wte: from_local loads strictly and only then deletes it.
        t3, s3gen = T3(_turbo_config()), S3Gen(meanflow=True)
        _save_safetensors(ve, folder / "ve.safetensors")
        _save_safetensors(t3, folder / "t3_turbo_v1.safetensors")
        _save_safetensors(s3gen, folder / "s3gen_meanflow.safetensors")
        _write_turbo_tokenizer(folder)
    else:
        from chatterbox.models.t3.modules.t3_config import T3Config
        from chatterbox.mtl_tts import ChatterboxMultilingualTTS as cls

        t3, s3gen = T3(T3Config.multilingual()), S3Gen()
        torch.save(ve.state_dict(), folder / "ve.pt")
        _save_safetensors(t3, folder / "t3_mtl23ls_v2.safetensors")
        torch.save(s3gen.state_dict(), folder / "s3gen.pt")
        _write_mtl_tokenizer(folder / "grapheme_mtl_merged_expanded_v1.json")

    # eval() as from_local does, or dropout would make the built-in voice differ from what the
    # loaded model computes. prepare_conditionals never touches the text tokenizer.
    for module in (ve, t3, s3gen):
        module.eval()
    model = cls(t3, s3gen, ve, None, "cpu")
    with torch.inference_mode():
        model.prepare_conditionals(str(reference_wav))
    model.conds.save(folder / BUILTIN_VOICE_FILE)


def is_complete(folder: Path, variant: str) -> bool:
    return all((folder / name).is_file() for name in expected_files(variant))


def write_checkpoints(out, variants=VARIANT_NAMES, seed: int = 0) -> Path:
    """Write every requested variant under `out` (skipping finished ones), then `out/.complete`."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not all(is_complete(out / v, v) for v in variants):
        (out / ".complete").unlink(missing_ok=True)  # it must not vouch for a run still going
    with tempfile.TemporaryDirectory() as scratch:
        # Long enough for turbo's 15 s (375-token) speech prompt; the other variants cut it shorter.
        reference_wav = write_reference_wav(Path(scratch) / "reference.wav", seconds=15.0, seed=seed)
        for variant in variants:
            final = out / variant
            if is_complete(final, variant):
                _log(f"{variant}: already complete in {final}")
                continue
            started = time.monotonic()
            partial = out / f".{variant}.partial"
            shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run
            partial.mkdir()
            torch.manual_seed(seed)
            _build(variant, partial, reference_wav)
            shutil.rmtree(final, ignore_errors=True)  # an incomplete one, see is_complete
            partial.rename(final)
            _log(f"{variant}: written to {final} in {time.monotonic() - started:.1f} s")
    (out / ".complete").touch()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.random_weights", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write the variant folders into")
    parser.add_argument(
        "--variants", default=",".join(VARIANT_NAMES), help="comma-separated subset of " + ",".join(VARIANT_NAMES)
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANT_NAMES))
    if unknown or not variants:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANT_NAMES)}")
    write_checkpoints(args.out, variants, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
