"""The Chatterbox engine: variants loaded once; synthesis runs on the one torch thread (torch_thread.py).

`prepare()` validates a request and gets its voice ready (errors here are the caller's fault and
come before any audio); `chunks()` then yields audio in order. Non-streaming callers join the chunks.
A server that runs many requests on one thread uses `steps()`, whose every step is bounded work.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from contract.errors import ServiceError
from contract.text import unpaired_surrogate_message
from contract.variants import SAMPLE_RATE

from ..upstream_patches import tolerate_missing_chinese_segmenter
from .decode import cfg_speech_tokens, turbo_speech_tokens
from .params import KNOWN_FIELDS, ParameterError, SynthesisParams, parse_params
from .streaming import ChunkedVocoder, StreamWatermarker, stream_piece
from .text import split_text
from .variants import VARIANT_SPECS, VariantSpec
from .voices import BUILTIN_VOICE, ConditionalsCache, VoiceError, VoiceSource, reference_duration
from .weights import pick_device, resolve_weights

logger = logging.getLogger(__name__)

SPEECH_VOCAB_SIZE = 6561  # ids at or above are start/stop/silence, not speech
JOIN_FADE_SAMPLES = SAMPLE_RATE // 100  # 10 ms fade-out where one text piece meets the next
STEP_TOKENS = 10  # speech tokens per step of steps(): how long one request keeps others waiting


@dataclass
class LoadedVariant:
    spec: VariantSpec
    model: Any  # the upstream Chatterbox*TTS object; its .conds is only ever the built-in voice
    lock: threading.Lock  # held per forward pass: upstream modules are not re-entrant
    backend: Any  # the HF backend wrapping T3 for CFG decoding (None for turbo)
    punc_norm: Callable[[str], str]


@dataclass(frozen=True)
class PreparedRequest:
    variant: str
    pieces: tuple[str, ...]
    params: SynthesisParams
    seed: int
    conds: Any


@dataclass(frozen=True)
class AudioChunk:
    samples: np.ndarray  # float32 mono at 24 kHz
    index: int
    speech_tokens: int  # speech tokens behind this chunk
    final: bool = False  # the utterance's last chunk: lets relays flag their own last piece without waiting


class ChatterboxEngine:
    def __init__(self, settings, on_voice_cache: Callable[[str, bool], None] | None = None):
        self.settings = settings
        self.device = pick_device(settings.device)
        self.variants: dict[str, LoadedVariant] = {}
        self.voice_cache = ConditionalsCache(settings.voice_cache_size, on_lookup=on_voice_cache)

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> None:
        for name in self.settings.variants:
            started = time.perf_counter()
            self.variants[name] = self._load_variant(VARIANT_SPECS[name])
            logger.info("%s model loaded on %s in %.1f s", name, self.device, time.perf_counter() - started)

    def _load_variant(self, spec: VariantSpec) -> LoadedVariant:
        folder = resolve_weights(self.settings.model_dir, spec)
        if spec.name == "multilingual":
            tolerate_missing_chinese_segmenter()
        module = importlib.import_module(spec.module)
        model = getattr(module, spec.class_name).from_local(folder, self.device)
        backend = None
        if spec.uses_cfg:
            from chatterbox.models.t3.inference.t3_hf_backend import T3HuggingfaceBackend

            t3 = model.t3
            if spec.name == "multilingual":
                # Upstream's alignment analyzer switches the backbone to eager attention with attention
                # outputs before the first forward pass; do it once here, identically.
                if getattr(t3.tfmr.config, "_attn_implementation", None) == "sdpa":
                    t3.tfmr.config._attn_implementation = "eager"
                t3.tfmr.config.output_attentions = True
            backend = T3HuggingfaceBackend(
                config=t3.cfg,
                llama=t3.tfmr,
                speech_enc=t3.speech_emb,
                speech_head=t3.speech_head,
            )
        return LoadedVariant(spec=spec, model=model, lock=threading.Lock(), backend=backend, punc_norm=module.punc_norm)

    @property
    def ready(self) -> bool:
        return len(self.variants) == len(self.settings.variants)

    # ---- requests ------------------------------------------------------------------------
    def prepare(
        self, variant: str, text: Any, raw_params: Mapping[str, Any], voice: VoiceSource = BUILTIN_VOICE
    ) -> PreparedRequest:
        """Validate everything and make the voice ready; raises ServiceError / ParameterError / VoiceError."""
        loaded = self.variants.get(variant)
        if loaded is None:
            raise ServiceError(404, f"model '{variant}' is not loaded (loaded: {', '.join(self.variants)})")
        if not isinstance(text, str) or not text.strip():
            raise ServiceError(400, "text: must be a non-empty string")
        if len(text) > self.settings.max_text_length:
            raise ServiceError(
                413,
                f"text: {len(text)} characters is over the limit of {self.settings.max_text_length} (MAX_TEXT_LENGTH)",
            )
        bad_text = unpaired_surrogate_message("text", text)
        if bad_text:
            raise ServiceError(400, bad_text)
        unknown = sorted(set(raw_params) - KNOWN_FIELDS)
        if unknown:
            raise ParameterError(unknown[0], f"unknown parameter (known: {', '.join(sorted(KNOWN_FIELDS))})")
        params = parse_params(variant, raw_params, self.settings.max_new_tokens)
        conds = self._conditionals(loaded, voice)
        seed = params.seed if params.seed is not None else secrets.randbits(32)
        return PreparedRequest(variant=variant, pieces=tuple(split_text(text)), params=params, seed=seed, conds=conds)

    def _conditionals(self, loaded: LoadedVariant, voice: VoiceSource):
        if voice.content is None:  # the built-in voice
            if loaded.model.conds is None:
                raise VoiceError(f"the {loaded.spec.name} model has no built-in voice: send a voice or audio_prompt")
            return loaded.model.conds
        duration = reference_duration(voice.content)
        minimum = loaded.spec.min_reference_seconds
        if duration <= minimum:
            raise VoiceError(
                f"reference voice {voice.label} is {duration:.2f} s long; the {loaded.spec.name} model needs more than {minimum:g} s"
            )
        if duration < 0.5:
            raise VoiceError(
                f"reference voice {voice.label} is {duration:.2f} s long; it needs at least 0.5 s of speech"
            )

        def prepare(path: str):
            model = loaded.model
            with loaded.lock, torch.inference_mode():
                builtin = model.conds
                try:
                    model.prepare_conditionals(path, exaggeration=0.5)
                    return model.conds
                except Exception as exc:
                    raise VoiceError(f"reference voice {voice.label} could not be used: {exc}") from None
                finally:
                    model.conds = builtin

        return self.voice_cache.get_or_prepare(loaded.spec.name, voice, prepare)

    def chunks(
        self, request: PreparedRequest, cancelled: Callable[[], bool] = lambda: False, stream: bool = False
    ) -> Iterator[AudioChunk]:
        """Yield audio in order; `cancelled` is polled between tokens.

        Without `stream`, one chunk per text piece, each exactly what upstream's generate() makes.
        With `stream`, chunks follow the token schedule (STREAM_CHUNK_TOKENS) within each piece.
        Either way the speech tokens are the same: T3 samples from its own generator, which the
        vocoder never advances.
        """
        for item in self.steps(request, cancelled, stream):
            if item is not None:
                yield item

    def steps(
        self, request: PreparedRequest, cancelled: Callable[[], bool] = lambda: False, stream: bool = False
    ) -> Iterator[AudioChunk | None]:
        """chunks(), with a None after every STEP_TOKENS speech tokens: each next() is then at most
        that many tokens and one vocoder call, and other requests can take their turn in between."""
        loaded = self.variants[request.variant]
        generator = torch.Generator(device=self.device).manual_seed(request.seed)
        t3_cond = self._t3_cond(loaded, request)
        index = 0
        for piece_index, piece in enumerate(request.pieces):
            last_piece = piece_index == len(request.pieces) - 1
            tokens = _with_pauses(self._speech_tokens(loaded, piece, t3_cond, request.params, generator))
            parts = (
                self._stream_piece(loaded, request, piece_index, tokens, cancelled)
                if stream
                else self._whole_piece(loaded, request, tokens, generator, cancelled)
            )
            for part in parts:
                if part is None:
                    yield None
                    continue
                samples, speech_tokens, piece_done = part
                if piece_done and not last_piece:
                    samples = _fade_out(samples, JOIN_FADE_SAMPLES)
                yield AudioChunk(
                    samples=samples, index=index, speech_tokens=speech_tokens, final=piece_done and last_piece
                )
                index += 1
            if cancelled():
                return

    def _whole_piece(
        self,
        loaded: LoadedVariant,
        request: PreparedRequest,
        tokens: Iterator[int | None],
        generator: torch.Generator,
        cancelled,
    ) -> Iterator[tuple[np.ndarray, int, bool] | None]:
        collected = []
        for token in tokens:
            if cancelled():
                return
            if token is None:
                yield None
                continue
            collected.append(token)
        speech = torch.tensor([t for t in collected if t < SPEECH_VOCAB_SIZE], dtype=torch.long, device=self.device)
        yield self._vocode(loaded, speech, request.conds, generator), int(speech.numel()), True

    def _stream_piece(
        self, loaded: LoadedVariant, request: PreparedRequest, piece_index: int, tokens: Iterator[int | None], cancelled
    ) -> Iterator[tuple[np.ndarray, int, bool] | None]:
        vocoder = self.chunked_vocoder(loaded, request, piece_index)
        watermark = StreamWatermarker(loaded.model.watermarker, SAMPLE_RATE, loaded.lock)
        yield from stream_piece(
            tokens, vocoder, watermark, self.settings.stream_chunk_tokens, SPEECH_VOCAB_SIZE, cancelled
        )

    def chunked_vocoder(self, loaded: LoadedVariant, request: PreparedRequest, piece_index: int) -> ChunkedVocoder:
        from chatterbox.models.s3gen.const import S3GEN_SIL

        turbo = loaded.spec.name == "turbo"
        return ChunkedVocoder(
            loaded.model.s3gen,
            request.conds.gen,
            loaded.lock,
            noise_seed=(request.seed * 1_000_003 + piece_index) % 2**63,
            meanflow=turbo,
            silence_token=S3GEN_SIL if turbo else None,
        )

    # ---- steps -----------------------------------------------------------------------------
    def _t3_cond(self, loaded: LoadedVariant, request: PreparedRequest):
        # The request gets its own copy: T3 caches the prompt embedding on the object it is given.
        cond = dataclasses.replace(request.conds.t3)
        if loaded.spec.uses_cfg:
            exaggeration = request.params.exaggeration
            if float(exaggeration) != float(cond.emotion_adv[0, 0, 0].item()):
                cond = type(cond)(
                    speaker_emb=cond.speaker_emb,
                    cond_prompt_speech_tokens=cond.cond_prompt_speech_tokens,
                    emotion_adv=exaggeration * torch.ones(1, 1, 1),
                ).to(device=self.device)
        return cond

    def _speech_tokens(
        self, loaded: LoadedVariant, piece: str, t3_cond, params: SynthesisParams, generator
    ) -> Iterator[int]:
        model = loaded.model
        text = loaded.punc_norm(piece)
        if loaded.spec.name == "turbo":
            text_tokens = model.tokenizer(text, return_tensors="pt", padding=True, truncation=True).input_ids.to(
                self.device
            )
            return turbo_speech_tokens(model.t3, t3_cond, text_tokens, params, generator, loaded.lock)
        if loaded.spec.name == "multilingual":
            text_tokens = model.tokenizer.text_to_tokens(text, language_id=params.language_id)
        else:
            text_tokens = model.tokenizer.text_to_tokens(text)
        text_tokens = torch.cat([text_tokens, text_tokens], dim=0).to(self.device)  # conditional + unconditional rows
        hp = model.t3.hp
        text_tokens = F.pad(F.pad(text_tokens, (1, 0), value=hp.start_text_token), (0, 1), value=hp.stop_text_token)
        return cfg_speech_tokens(
            model.t3,
            loaded.backend,
            t3_cond,
            text_tokens,
            params,
            generator,
            loaded.lock,
            multilingual=loaded.spec.name == "multilingual",
        )

    def _vocode(self, loaded: LoadedVariant, speech: torch.Tensor, conds, generator: torch.Generator) -> np.ndarray:
        model = loaded.model
        with loaded.lock, torch.inference_mode():
            # S3Gen draws its noise from the global RNG: give it the request's stream where T3 left
            # it, as upstream's generate() does after seeding (T3's own generator is not advanced).
            _global_generator(self.device).set_state(generator.get_state())
            if loaded.spec.name == "turbo":
                from chatterbox.models.s3gen.const import S3GEN_SIL

                silence = torch.tensor([S3GEN_SIL] * 3, dtype=torch.long, device=self.device)
                wav, _ = model.s3gen.inference(
                    speech_tokens=torch.cat([speech, silence]), ref_dict=conds.gen, n_cfm_timesteps=2
                )
            else:
                wav, _ = model.s3gen.inference(speech_tokens=speech, ref_dict=conds.gen)
            wav = wav.squeeze(0).detach().cpu().numpy()
            watermarked = model.watermarker.apply_watermark(wav, sample_rate=SAMPLE_RATE)
        return np.ascontiguousarray(watermarked, dtype=np.float32)


def _with_pauses(tokens: Iterator[int]) -> Iterator[int | None]:
    for count, token in enumerate(tokens, 1):
        yield token
        if count % STEP_TOKENS == 0:
            yield None


def _global_generator(device: str) -> torch.Generator:
    if device == "cuda":
        return torch.cuda.default_generators[torch.cuda.current_device()]
    return torch.default_generator


def _fade_out(samples: np.ndarray, length: int) -> np.ndarray:
    length = min(length, len(samples))
    if length == 0:
        return samples
    out = samples.copy()
    out[-length:] *= (0.5 * (1 + np.cos(np.linspace(0, np.pi, length)))).astype(np.float32)
    return out
