"""Typed options of the llama.cpp backend (a typo in a config fails at start-up)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from backends.base import BackendOptions

KvType = Literal["f16", "q8_0", "q4_0"]


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

    @model_validator(mode="after")
    def _consistent(self) -> LlamaCppOptions:
        # llama.cpp only implements a quantized V cache inside its flash-attention kernels.
        if self.cache_type_v != "f16" and not self.flash_attn:
            raise ValueError(f"cache_type_v={self.cache_type_v} needs flash_attn: true (llama.cpp limitation)")
        # Every running sequence needs its decode token in the one batch of a step.
        if self.n_batch < self.parallel:
            raise ValueError(f"n_batch ({self.n_batch}) must be at least parallel ({self.parallel})")
        return self
