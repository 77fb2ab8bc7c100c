"""The Chatterbox engine: variants loaded once; synthesis of many requests on the one torch thread
(torch_thread.py), batched per variant (scheduler.py).

`prepare()` validates a request and gets its voice ready (errors here are the caller's fault and
come before any audio); `chunks()` then yields audio in order. Non-streaming callers join the chunks.
Called directly, `chunks()` decodes its request alone. Run as a scheduler task (scheduler.py), its
T3 decoding joins the variant's shared batch (batching.py) and each of its flow encoder calls and
flow ODE steps joins the tick's batched call (flow_batching.py), so that many requests share each
forward pass.

All model work must run on one thread: requests interleave only at the task switch points, where
no upstream module is in the middle of a call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import secrets
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from contract.admission import text_length_problem
from contract.errors import ServiceError
from contract.tags import tag_problem
from contract.text import unpaired_surrogate_message
from contract.variants import SAMPLE_RATE

from ..upstream_patches import tolerate_missing_chinese_segmenter
from .batching import DecodingBatch, T3Batch, speech_tokens
from .decode import CfgDecoder, PrefixLookup, SpeechDecoder, TurboDecoder
from .flow_batching import BatchedCalls, EncoderBatch, EstimatorBatch, VocoderBatch
from .params import KNOWN_FIELDS, ParameterError, SynthesisParams, parse_params
from .precision import resolve_precision
from .prompt_prefix import PromptPrefixCache
from .static_batch import StaticTurboBatch
from .streaming import ChunkedVocoder, StreamWatermarker, stream_piece
from .text import split_text
from .variants import VARIANT_SPECS, VariantSpec
from .voices import BUILTIN_VOICE, ConditionalsCache, VoiceError, VoiceSource, reference_duration
from .weights import load_model, pick_device, resolve_weights

logger = logging.getLogger(__name__)
Batched = TypeVar("Batched", bound=BatchedCalls)

SPEECH_VOCAB_SIZE = 6561  # ids at or above are start/stop/silence, not speech
JOIN_FADE_SAMPLES = SAMPLE_RATE // 100  # 10 ms fade-out where one text piece meets the next
# Positions a turbo prompt may take in the static batch's KV rows: the voice's 150 conditioning
# tokens, the speaker embedding and a text piece of at most 300 characters, with room to spare.
STATIC_MAX_PROMPT = 512
WARM_UP_TOKENS = 12  # past the first stream chunk (5 tokens), so both flow windows are met


@dataclass
class LoadedVariant:
    spec: VariantSpec
    model: Any  # the upstream Chatterbox*TTS object; its .conds is only ever the built-in voice
    backend: Any  # the HF backend wrapping T3 for CFG prefill (None for turbo)
    punc_norm: Callable[[str], str]
    batch: DecodingBatch  # the variant's requests decoding together
    flow_encoder: EncoderBatch  # the variant's requests' flow encoder calls, run together
    flow_estimator: EstimatorBatch  # the variant's requests' flow ODE steps, run together
    vocoder: VocoderBatch  # the variant's requests' HiFT calls of one length, run together
    prefixes: PromptPrefixCache  # T3's KV of each voice's conditioning prompt
    tags: tuple[str, ...] = ()  # the [tags] its tokenizer knows (contract/tags.py)

    @property
    def s3gen_calls(self) -> tuple[BatchedCalls, ...]:
        return (self.flow_encoder, self.flow_estimator, self.vocoder)


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
        self.precision = resolve_precision(settings.dtype, self.device)
        self.variants: dict[str, LoadedVariant] = {}
        self.voice_cache = ConditionalsCache(settings.voice_cache_size, on_lookup=on_voice_cache)

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> None:
        for name in self.settings.variants:
            started = time.perf_counter()
            loaded = self._load_variant(VARIANT_SPECS[name])
            if self.settings.warm_up == "on" or (self.settings.warm_up == "auto" and self.device == "cuda"):
                self._warm_up(loaded)
            self.variants[name] = loaded
            logger.info(
                "%s model loaded on %s (%s) in %.1f s",
                name,
                self.device,
                self.precision.describe(),
                time.perf_counter() - started,
            )

    def _warm_up(self, loaded: LoadedVariant) -> None:
        """A few tokens of the built-in voice, whole and streamed, before the variant counts as loaded."""
        if loaded.model.conds is None:
            logger.info("%s: no built-in voice, no warm-up", loaded.spec.name)
            return
        started = time.perf_counter()
        params: dict[str, Any] = {"seed": 0, "max_new_tokens": WARM_UP_TOKENS}
        if loaded.spec.requires_language:
            params["language_id"] = "en"
        self.variants[loaded.spec.name] = loaded  # prepare() looks the variant up
        try:
            request = self.prepare(loaded.spec.name, "Warming up.", params)
            for stream in (False, True):
                for _ in self.chunks(request, stream=stream):
                    pass
        finally:
            del self.variants[loaded.spec.name]
        logger.info("%s warmed up in %.1f s", loaded.spec.name, time.perf_counter() - started)

    def _load_variant(self, spec: VariantSpec) -> LoadedVariant:
        folder = resolve_weights(self.settings.model_dir, spec)
        if spec.segments_chinese:
            tolerate_missing_chinese_segmenter()
        module = importlib.import_module(spec.module)
        model = load_model(getattr(module, spec.class_name).from_local, folder, self.device, spec.name)
        backend = None
        if spec.uses_cfg:
            from chatterbox.models.t3.inference.t3_hf_backend import T3HuggingfaceBackend

            t3 = model.t3
            if spec.alignment_analysis:
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
        self.precision.adapt_t3(model.t3)
        self.precision.adapt_flow(model.s3gen.flow.decoder.estimator)
        self.precision.adapt_hift(model.s3gen.mel2wav)
        flow = model.s3gen.flow
        batch: DecodingBatch
        if spec.static_batch and self.settings.cuda_graphs == "on":
            batch = StaticTurboBatch(
                model.t3,
                self.precision.t3_autocast,
                self.precision.t3,
                capacity=self.settings.cuda_graph_batch_capacity,
                max_new_tokens=self.settings.max_new_tokens,
                max_prompt=STATIC_MAX_PROMPT,
                capture=self.device == "cuda",
            )
        else:
            batch = T3Batch(model.t3, self.precision.t3_autocast, self.precision.t3_cache_dtype, self.settings.sampler)
        return LoadedVariant(
            spec=spec,
            model=model,
            backend=backend,
            punc_norm=module.punc_norm,
            batch=batch,
            flow_encoder=self._batch_calls(flow.encoder, EncoderBatch(flow.encoder, *self._flow_batching)),
            flow_estimator=self._batch_calls(
                flow.decoder.estimator, EstimatorBatch(flow.decoder.estimator.forward, *self._flow_batching)
            ),
            vocoder=self._batch_vocoder(model.s3gen.mel2wav),
            prefixes=PromptPrefixCache(self.settings.prompt_prefix_cache_size),
            tags=spec.tags_of(model),
        )

    @property
    def _flow_batching(self) -> tuple[Callable[[], contextlib.AbstractContextManager], bool]:
        """What both batched flow calls take: the flow's autocast, and whether to batch (BATCH_VOCODER)."""
        return self.precision.flow_autocast, self.settings.batch_vocoder

    @staticmethod
    def _batch_calls(module: torch.nn.Module, batched: Batched) -> Batched:
        """The flow's encoder and estimator run at the flow's precision, and in a scheduler task join
        the tick's batched call (flow_batching.py). Upstream calls the estimator's `forward` directly,
        so no hook would see it: the instance's forward is replaced."""
        module.forward = batched
        return batched

    def _batch_vocoder(self, hift: Any) -> VocoderBatch:
        """HiFT's `decode` (already at HiFT's precision: Precision.adapt_hift) joins the tick's batched
        call in a scheduler task; `inference` calls it on the instance, so the attribute is replaced."""
        batched = VocoderBatch(hift.decode, contextlib.nullcontext, self.settings.batch_vocoder)
        hift.decode = batched
        return batched

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
        too_long = text_length_problem(len(text), self.settings.max_text_length)
        if too_long:
            raise ServiceError(413, too_long)
        bad_text = unpaired_surrogate_message("text", text) or tag_problem(text, variant, loaded.tags)
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
            with torch.inference_mode():
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
        loaded = self.variants[request.variant]
        generator = torch.Generator(device=self.device).manual_seed(request.seed)
        t3_cond = self._t3_cond(loaded, request)
        prefix = self._prefix_lookup(loaded, request)
        index = 0
        with torch.inference_mode():
            for piece_index, piece in enumerate(request.pieces):
                last_piece = piece_index == len(request.pieces) - 1
                tokens = self._speech_tokens(loaded, piece, t3_cond, request.params, generator, prefix, piece_index)
                parts = (
                    self._stream_piece(loaded, request, piece_index, tokens, cancelled)
                    if stream
                    else self._whole_piece(loaded, request, tokens, generator, cancelled)
                )
                try:
                    for samples, speech_tokens_behind, piece_done in parts:
                        if piece_done and not last_piece:
                            samples = _fade_out(samples, JOIN_FADE_SAMPLES)
                        yield AudioChunk(
                            samples=samples,
                            index=index,
                            speech_tokens=speech_tokens_behind,
                            final=piece_done and last_piece,
                        )
                        index += 1
                finally:
                    tokens.close()  # a request that stops early leaves the T3 batch now
                if cancelled():
                    return

    def _whole_piece(
        self,
        loaded: LoadedVariant,
        request: PreparedRequest,
        tokens: Iterator[int],
        generator: torch.Generator,
        cancelled,
    ) -> Iterator[tuple[np.ndarray, int, bool]]:
        collected = []
        for token in tokens:
            if cancelled():
                return
            collected.append(token)
        speech = torch.tensor([t for t in collected if t < SPEECH_VOCAB_SIZE], dtype=torch.long, device=self.device)
        yield self._vocode(loaded, speech, request.conds, generator), int(speech.numel()), True

    def _stream_piece(
        self, loaded: LoadedVariant, request: PreparedRequest, piece_index: int, tokens: Iterator[int], cancelled
    ) -> Iterator[tuple[np.ndarray, int, bool]]:
        vocoder = self.chunked_vocoder(loaded, request, piece_index)
        watermark = StreamWatermarker(loaded.model.watermarker, SAMPLE_RATE)
        yield from stream_piece(
            tokens, vocoder, watermark, self.settings.stream_chunk_tokens, SPEECH_VOCAB_SIZE, cancelled
        )

    def chunked_vocoder(self, loaded: LoadedVariant, request: PreparedRequest, piece_index: int) -> ChunkedVocoder:
        from chatterbox.models.s3gen.const import S3GEN_SIL

        meanflow = loaded.spec.meanflow_vocoder
        return ChunkedVocoder(
            loaded.model.s3gen,
            request.conds.gen,
            noise_seed=(request.seed * 1_000_003 + piece_index) % 2**63,
            meanflow=meanflow,
            silence_token=S3GEN_SIL if meanflow else None,
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

    def _prefix_lookup(self, loaded: LoadedVariant, request: PreparedRequest) -> PrefixLookup | None:
        if not loaded.prefixes.enabled:
            return None
        # The voice fixes the prefix, and with CFG the exaggeration too (T3's emotion input).
        detail = float(request.params.exaggeration) if loaded.spec.uses_cfg else None
        return functools.partial(loaded.prefixes.get, request.conds, detail)

    def _speech_tokens(
        self,
        loaded: LoadedVariant,
        piece: str,
        t3_cond,
        params: SynthesisParams,
        generator,
        prefix: PrefixLookup | None,
        piece_index: int = 0,
    ) -> Generator[int, None, None]:
        model = loaded.model
        options = {"prefix": prefix, "upstream": self.settings.sampler == "upstream", "piece": piece_index}
        text = loaded.punc_norm(piece)
        decoder: SpeechDecoder
        if loaded.spec.text_tokenizer == "gpt2":
            text_tokens = model.tokenizer(text, return_tensors="pt", padding=True, truncation=True).input_ids.to(
                self.device
            )
            decoder = TurboDecoder(model.t3, t3_cond, text_tokens, params, generator, **options)
        else:
            if loaded.spec.text_tokenizer == "grapheme_per_language":
                text_tokens = model.tokenizer.text_to_tokens(text, language_id=params.language_id)
            else:
                text_tokens = model.tokenizer.text_to_tokens(text)
            # conditional + unconditional rows
            text_tokens = torch.cat([text_tokens, text_tokens], dim=0).to(self.device)
            hp = model.t3.hp
            text_tokens = F.pad(F.pad(text_tokens, (1, 0), value=hp.start_text_token), (0, 1), value=hp.stop_text_token)
            decoder = CfgDecoder(
                model.t3,
                loaded.backend,
                t3_cond,
                text_tokens,
                params,
                generator,
                multilingual=loaded.spec.alignment_analysis,
                **options,
            )
        return speech_tokens(decoder, loaded.batch, self.precision.t3_autocast)

    def _vocode(self, loaded: LoadedVariant, speech: torch.Tensor, conds, generator: torch.Generator) -> np.ndarray:
        model = loaded.model
        with torch.inference_mode():
            # S3Gen draws its noise from the global RNG: give it the request's stream where T3 left
            # it, as upstream's generate() does after seeding (T3's own generator is not advanced).
            # (A task switch inside keeps this request's RNG state: see tasks.py.)
            _global_generator(self.device).set_state(generator.get_state())
            if loaded.spec.meanflow_vocoder:
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
