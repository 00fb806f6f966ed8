"""Embeddings for GGUF models: a second llama.cpp context on the engine's already loaded model.

- Same weights: the context is built from the engine's ``llama_model``. llama.cpp lets several
  contexts share one model (its weights are read-only once loaded), so embeddings cost no second
  load and no second copy of the weights.
- Own context: embedding mode changes what a decode returns (pooled vectors, not logits) and
  clears its KV cells for every batch. The generation context stays the engine thread's alone.
- Built lazily, on the first embedding request: its KV cache and compute buffer (a whole input
  must sit in one ubatch to be pooled, so the ubatch is ``n_ctx`` tokens) are memory a
  generation-only deployment should not pay for. The first request pays the build (~10-50 ms).
- Own thread: every embedding decode runs on one long-lived worker thread, so neither the event
  loop nor the engine thread ever waits on it. ggml computes with OpenMP, which keeps a thread
  team per calling thread; one fixed thread means one extra team, where a pool of changing
  threads would leave a team behind in each (see ``batched.py`` on what that costs). A lock
  orders decodes against ``close()``.
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import logging
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import llama_cpp as lc

from backends.errors import BackendUnavailable
from backends.llama_cpp.native import NativeModel

logger = logging.getLogger(__name__)

POOLING_TYPES: dict[str, int] = {
    "mean": lc.LLAMA_POOLING_TYPE_MEAN,
    "cls": lc.LLAMA_POOLING_TYPE_CLS,
    "last": lc.LLAMA_POOLING_TYPE_LAST,
}
_POOLING_NAMES = {value: name for name, value in POOLING_TYPES.items()}
# Inputs packed into one decode, each its own sequence (they share the context's cells).
MAX_SEQS = 64


def resolve_pooling(choice: str, metadata: Mapping[str, str]) -> str:
    """``"model"``: the pooling the GGUF declares (``<arch>.pooling_type``, written for embedding
    models) when it is mean, cls or last; else mean, as a chat model declares none."""
    if choice != "model":
        return choice
    declared = metadata.get(f"{metadata.get('general.architecture', '')}.pooling_type", "")
    try:
        return _POOLING_NAMES.get(int(declared), "mean")
    except ValueError:
        return "mean"


@dataclass(frozen=True, slots=True)
class EmbedConfig:
    n_ctx: int  # the longest input, and the tokens of one decode (inputs are packed up to it)
    n_threads: int
    flash_attn: bool
    pooling: str  # mean | cls | last


class Embedder:
    """The embedding context of one ``NativeModel``; closed with it (``NativeModel.on_close``)."""

    def __init__(self, native: NativeModel, cfg: EmbedConfig) -> None:
        if cfg.pooling not in POOLING_TYPES:
            raise ValueError(f"pooling must be one of {sorted(POOLING_TYPES)}")
        self.native = native
        self.cfg = cfg
        self.size = int(lc.llama_model_n_embd_out(native.model))
        self._ctx: Any = None
        self._batch: Any = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._closed = False
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-embed")
        native.on_close(self.close)

    async def embed(self, inputs: list[list[int]]) -> list[tuple[float, ...]]:
        """One unit-length vector per input (each already known to fit ``n_ctx``)."""
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._worker, self._embed_all, inputs, cancel)
        except RuntimeError:  # the worker was shut down: the model is closing
            raise BackendUnavailable("the llama.cpp engine is closed") from None
        try:
            return await future
        finally:
            cancel.set()  # client gone or timed out: the worker stops before its next decode

    def _embed_all(self, inputs: list[list[int]], cancel: threading.Event) -> list[tuple[float, ...]]:
        with self._lock:
            if self._closed:
                raise BackendUnavailable("the llama.cpp engine is closed")
            if self._ctx is None:
                self._open()
            out: list[tuple[float, ...]] = []
            for group in pack(inputs, self.cfg.n_ctx, MAX_SEQS):
                if self._closing.is_set():
                    raise BackendUnavailable("the llama.cpp engine is closing")
                if cancel.is_set():
                    return []  # nobody is waiting for the result any more
                out.extend(self._decode(group))
            return out

    def _open(self) -> None:
        cfg = self.cfg
        params = lc.llama_context_default_params()
        params.n_ctx = cfg.n_ctx
        # Pooling runs per ubatch: an input split across two would be pooled over half of it.
        params.n_batch = cfg.n_ctx
        params.n_ubatch = cfg.n_ctx
        params.n_seq_max = MAX_SEQS
        params.kv_unified = True  # the packed inputs share the n_ctx cells, each masked from the others
        params.n_threads = cfg.n_threads
        params.n_threads_batch = cfg.n_threads
        params.embeddings = True
        params.pooling_type = POOLING_TYPES[cfg.pooling]
        params.flash_attn_type = (
            lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if cfg.flash_attn else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        params.no_perf = True
        ctx = lc.llama_init_from_model(self.native.model, params)
        if not ctx:
            raise BackendUnavailable(f"llama.cpp could not create an embedding context of {cfg.n_ctx} tokens")
        self._ctx = ctx
        self._memory = lc.llama_get_memory(ctx)
        self._batch = lc.llama_batch_init(cfg.n_ctx, 0, 1)
        logger.info("embedding context: %s pooling, %d tokens, %d threads", cfg.pooling, cfg.n_ctx, cfg.n_threads)

    def _decode(self, group: list[list[int]]) -> list[tuple[float, ...]]:
        lc.llama_memory_clear(self._memory, True)
        batch = self._batch
        tok, pos, seq, n_seq, out = batch.token, batch.pos, batch.seq_id, batch.n_seq_id, batch.logits
        i = 0
        for seq_id, tokens in enumerate(group):
            for p, token in enumerate(tokens):
                tok[i], pos[i], n_seq[i], out[i] = token, p, 1, True
                seq[i][0] = seq_id
                i += 1
        batch.n_tokens = i
        rc = lc.llama_decode(self._ctx, batch)
        if rc != 0:
            raise BackendUnavailable(f"llama.cpp failed to compute embeddings (llama_decode returned {rc})")
        vectors = []
        for seq_id in range(len(group)):
            ptr = lc.llama_get_embeddings_seq(self._ctx, seq_id)
            if not ptr:
                raise BackendUnavailable("llama.cpp returned no pooled embedding")
            vectors.append(unit_float32(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float))[: self.size]))
        return vectors

    def close(self) -> None:
        """Free the context; waits for a decode in flight (a multi-decode request stops early)."""
        self._closing.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._ctx is not None:
                lc.llama_batch_free(self._batch)
                lc.llama_free(self._ctx)
                self._ctx = None
        self._worker.shutdown(wait=False, cancel_futures=True)


def pack(inputs: Sequence[list[int]], max_tokens: int, max_seqs: int) -> Iterator[list[list[int]]]:
    """Consecutive inputs grouped so each group fits one decode; order is kept."""
    group: list[list[int]] = []
    used = 0
    for tokens in inputs:
        if group and (used + len(tokens) > max_tokens or len(group) == max_seqs):
            yield group
            group, used = [], 0
        group.append(tokens)
        used += len(tokens)
    if group:
        yield group


def unit_float32(values: Sequence[float]) -> tuple[float, ...]:
    """L2-normalised (OpenAI's embeddings are unit length), rounded to float32 so the "float" and
    "base64" encodings of a vector carry exactly the same numbers."""
    norm = math.sqrt(math.fsum(v * v for v in values))
    scaled = values if norm == 0.0 else [v / norm for v in values]
    return tuple(array.array("f", scaled))
