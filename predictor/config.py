"""Predictor settings, read once from the environment (names follow the seed's configuration table).
The variables both services share are parsed by contract.settings.SharedSettings."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from contract.settings import SharedSettings
from contract.variants import VARIANT_NAMES

# DTYPE (engine/precision.py). Defined here, not in the engine, so that settings are read and checked
# before torch is imported: a bad value is refused in a second, not after eight.
DtypeSetting = Literal["auto", "float32", "bfloat16", "float16"]
DTYPE_CHOICES: tuple[str, ...] = get_args(DtypeSetting)


class PredictorSettings(SharedSettings):
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # Per component, measured: predictor/engine/precision.py says where each dtype pays.
    dtype: DtypeSetting = "auto"
    # Vocoding requests of a variant share each flow encoder and ODE step pass (engine/flow_batching.py);
    # false: each call runs alone, as its own slice of the scheduler's tick.
    batch_vocoder: bool = True
    # How T3 draws each token (engine/sampling.py): "fast" samples the whole batch in one pass of
    # tensor ops from per-request counter-based noise; "upstream" runs upstream's own sampler per
    # request (with DTYPE=float32, audio sample-identical to upstream's generate()).
    sampler: Literal["fast", "upstream"] = "fast"
    # Turbo's T3 step over fixed buffers, one CUDA graph per batch-size bucket (engine/static_batch.py).
    # Off by default: no GPU run has yet checked it against the eager path. On a CPU it runs uncaptured.
    cuda_graphs: Literal["off", "on"] = "off"
    # Before a variant is reported loaded, synthesise a few tokens with it, streamed and whole, so that the
    # first requests do not pay for kernel selection and lazy loading (on a GPU, seconds). auto: on CUDA only.
    warm_up: Literal["auto", "on", "off"] = "auto"
    # Requests the static batch holds (its largest bucket); its KV buffers are reserved for all of them.
    cuda_graph_batch_capacity: int = Field(64, ge=1, le=256)
    load_standard: bool = True
    load_turbo: bool = False
    load_multilingual: bool = False
    model_dir: str | None = None  # unset: --model_dir (kserve's storage initializer's /mnt/models)
    max_new_tokens: int = Field(1000, ge=1)
    voice_cache_size: int = Field(32, ge=1)
    # Voices whose T3 conditioning-prompt KV is kept (engine/prompt_prefix.py; turbo: 37 MB each in
    # bf16, 74 MB in float32); 0: every request prefills its whole prompt.
    prompt_prefix_cache_size: int = Field(8, ge=0)
    # Give freed heap memory back to the OS each time the predictor runs out of work (predictor/heap.py).
    release_heap_when_idle: bool = True
    # While requests run, serve buffers of up to 256 MiB from the heap, reusing freed ones, instead of
    # mapping (and zero-filling) each anew (predictor/heap.py).
    heap_large_buffers: bool = True
    # The sentence-chunk schedule for streaming, in speech tokens: a small first chunk, larger later ones.
    stream_chunk_tokens: Annotated[tuple[int, ...], NoDecode] = (5, 25, 50)

    @field_validator("device", "dtype", "sampler", "cuda_graphs", "warm_up", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("stream_chunk_tokens", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = tuple(int(part) for part in value.split(",") if part.strip())
            except ValueError:
                raise ValueError("must be positive integers separated by commas, e.g. 5,25,50") from None
        if not value or min(value) < 1:
            raise ValueError("must be positive integers separated by commas, e.g. 5,25,50")
        return value

    @model_validator(mode="after")
    def _some_model(self) -> PredictorSettings:
        if not self.variants:
            raise ValueError(
                "no model selected: set at least one of LOAD_STANDARD, LOAD_TURBO, LOAD_MULTILINGUAL to true"
            )
        if self.cuda_graphs == "on" and self.sampler == "upstream":
            raise ValueError("CUDA_GRAPHS=on needs SAMPLER=fast: the upstream sampler runs per request")
        return self

    @property
    def variants(self) -> list[str]:
        wanted = {"standard": self.load_standard, "turbo": self.load_turbo, "multilingual": self.load_multilingual}
        return [name for name in VARIANT_NAMES if wanted[name]]
