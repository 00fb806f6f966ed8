"""Typed options of the llama.cpp backend (a typo in a config fails at start-up)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from backends.base import BackendOptions

KvType = Literal["f16", "q8_0", "q4_0"]
KV_TYPES: tuple[str, ...] = ("f16", "q8_0", "q4_0")


def engine_option_problem(
    *,
    n_ctx: int,
    parallel: int,
    n_batch: int,
    flash_attn: bool,
    cache_type_k: str,
    cache_type_v: str,
    max_queue: int = 0,
) -> str | None:
    """What llama.cpp (or the batched engine) would refuse in these options, said plainly; None
    when they are consistent. The one home of these rules: the typed options, the engine and the
    native context all ask here, so a config file and a direct engine user get the same answer."""
    if n_ctx < 0 or parallel < 1 or max_queue < 0:
        return "n_ctx must be >= 0, parallel >= 1 and max_queue >= 0"
    for name, value in (("cache_type_k", cache_type_k), ("cache_type_v", cache_type_v)):
        if value not in KV_TYPES:
            return f"{name} must be one of {list(KV_TYPES)}, got {value!r}"
    # llama.cpp only implements a quantized V cache inside its flash-attention kernels.
    if cache_type_v != "f16" and not flash_attn:
        return f"cache_type_v={cache_type_v} needs flash_attn: true (llama.cpp limitation)"
    # Every running sequence needs its decode token in the one batch of a step.
    if n_batch < parallel:
        return f"n_batch ({n_batch}) must be at least parallel ({parallel})"
    return None


class LlamaCppOptions(BackendOptions):
    # Context window of ONE request. 0 = the model's trained context. Never divided across
    # parallel slots: the engine allocates parallel x n_ctx.
    n_ctx: int = Field(default=4096, ge=0)
    n_threads: int | None = Field(default=None, ge=1)
    n_batch: int = Field(default=512, ge=1)
    # auto: every layer when the build can offload and the device has room, fewer when it has
    # not, 0 on a CPU build (backends.llama_cpp.offload). A count: as given; -1 = every layer.
    n_gpu_layers: Annotated[int, Field(ge=-1)] | Literal["auto"] = "auto"
    # Sequences decoded together in one llama_decode per step (continuous batching); the
    # context holds parallel x n_ctx cells so each request really gets n_ctx.
    parallel: int = Field(default=4, ge=1, le=256)
    # Keep a finished request's KV in its idle slot; a new prompt sharing its prefix skips it.
    prefix_cache: bool = True
    # On by default: with flash attention every query row is computed on its own, so greedy output
    # is bit-identical however requests are batched (and it is faster on CPU here).
    flash_attn: bool = True
    cache_type_k: KvType = "f16"
    cache_type_v: KvType = "f16"
    max_queue: int = Field(default=64, ge=0)  # requests allowed to wait; past it: 429
    chat_template: str | None = None  # overrides the GGUF's tokenizer.chat_template
    # /v1/embeddings pooling: "model" = what the GGUF declares (embedding models do), else mean.
    embedding_pooling: Literal["model", "mean", "cls", "last"] = "model"
    # Run the engine in its own process, so a native crash costs this model a restart, not the
    # server. false: in the server's process (a crash there ends every model).
    engine_process: bool = True
    # How plain requests are sampled (backends.llama_cpp.sampling): auto = "backend" (inside the
    # decode graph) when layers are offloaded to a GPU, "numpy" (every sequence of a step
    # together) on the CPU; "native" = llama.cpp's chain per sequence, as before either existed.
    sampler: Literal["auto", "numpy", "backend", "native"] = "auto"

    @model_validator(mode="after")
    def _consistent(self) -> LlamaCppOptions:
        problem = engine_option_problem(
            n_ctx=self.n_ctx,
            parallel=self.parallel,
            n_batch=self.n_batch,
            flash_attn=self.flash_attn,
            cache_type_k=self.cache_type_k,
            cache_type_v=self.cache_type_v,
            max_queue=self.max_queue,
        )
        if problem is not None:
            raise ValueError(problem)
        return self
