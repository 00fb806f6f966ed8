"""Thin owner of the native llama.cpp objects one batched engine needs.

Everything here is a direct call into llama-cpp-python's low-level ctypes bindings; the
high-level ``llama_cpp.Llama`` class is avoided because it serialises requests and samples
in Python over the full vocabulary.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as lc
import numpy as np

from backends.errors import BackendStartupError, BackendUnavailable, ConfigError
from backends.llama_cpp.options import engine_option_problem
from backends.llama_cpp.vocabulary import detokenize_with, token_text_of, tokenize_with

logger = logging.getLogger(__name__)

KV_CACHE_TYPES: dict[str, int] = {
    "f16": lc.GGML_TYPE_F16,
    "q8_0": lc.GGML_TYPE_Q8_0,
    "q4_0": lc.GGML_TYPE_Q4_0,
}


@dataclass(frozen=True, slots=True)
class ContextConfig:
    n_ctx_seq: int  # per sequence; 0 = the model's training context
    n_seq: int
    n_batch: int
    n_threads: int
    n_gpu_layers: int
    flash_attn: bool
    cache_type_k: str
    cache_type_v: str


def _context_params(cfg: ContextConfig, n_ctx_seq: int) -> Any:
    # Checked before the (slow) model load: llama.cpp would fail later and opaquely.
    problem = engine_option_problem(
        n_ctx=cfg.n_ctx_seq,
        parallel=cfg.n_seq,
        n_batch=cfg.n_batch,
        flash_attn=cfg.flash_attn,
        cache_type_k=cfg.cache_type_k,
        cache_type_v=cfg.cache_type_v,
    )
    if problem is not None:
        raise ConfigError(problem)
    params = lc.llama_context_default_params()
    params.n_ctx = n_ctx_seq * cfg.n_seq
    params.n_batch = cfg.n_batch
    params.n_ubatch = cfg.n_batch
    params.n_seq_max = cfg.n_seq
    params.n_threads = cfg.n_threads
    params.n_threads_batch = cfg.n_threads
    params.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if cfg.flash_attn else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.type_k = KV_CACHE_TYPES[cfg.cache_type_k]
    params.type_v = KV_CACHE_TYPES[cfg.cache_type_v]
    # One KV stream per sequence: llama.cpp gives each n_ctx / n_seq = n_ctx_seq cells (padded
    # to 256), and a sequence's attention scans only its own cells. That is cheaper than a
    # unified buffer when prompts differ (llama.cpp's own advice) and keeps a sequence's cell
    # layout the same alone or in a batch, so greedy output does not depend on the neighbours.
    params.kv_unified = False
    params.no_perf = True
    return params


class NativeModel:
    """Model, context, vocabulary and one reusable ``llama_batch``; freed by ``close()``."""

    def __init__(self, model_path: Path, cfg: ContextConfig) -> None:
        self.n_batch = cfg.n_batch
        _context_params(cfg, 1)  # validate the options before the (slow) model load
        if not model_path.is_file():
            raise BackendStartupError(f"model file not found: {model_path.name}")
        lc.llama_backend_init()
        model_params = lc.llama_model_default_params()
        model_params.n_gpu_layers = cfg.n_gpu_layers
        self._model = lc.llama_model_load_from_file(str(model_path).encode(), model_params)
        if not self._model:
            raise BackendStartupError(f"llama.cpp could not load {model_path.name} (not a valid GGUF?)")
        self.n_ctx_train: int = lc.llama_model_n_ctx_train(self._model)
        self.n_ctx_seq = cfg.n_ctx_seq or self.n_ctx_train
        self._ctx = lc.llama_init_from_model(self._model, _context_params(cfg, self.n_ctx_seq))
        if not self._ctx:
            lc.llama_model_free(self._model)
            raise BackendStartupError(
                f"llama.cpp could not create a context of {cfg.n_seq} x {self.n_ctx_seq} tokens for {model_path.name}"
            )
        self.vocab = lc.llama_model_get_vocab(self._model)
        self.n_vocab: int = lc.llama_vocab_n_tokens(self.vocab)
        self.memory = lc.llama_get_memory(self._ctx)
        self._batch = lc.llama_batch_init(cfg.n_batch, 0, 1)
        # Field pointers are fetched once: each attribute access on a ctypes struct builds a new
        # pointer object, which would otherwise cost several allocations per batched token.
        self.tok = self._batch.token
        self.pos = self._batch.pos
        self.logits = self._batch.logits
        self.seq = [self._batch.seq_id[i] for i in range(cfg.n_batch)]
        n_seq_id = self._batch.n_seq_id
        for i in range(cfg.n_batch):
            n_seq_id[i] = 1
        self._pieces: dict[int, tuple[bytes, bool]] = {}
        self._eog: np.ndarray | None = None
        self._piece_buf = ctypes.create_string_buffer(256)
        self._closed = False
        self._close_lock = threading.Lock()
        self._close_hooks: list[Callable[[], None]] = []

    @property
    def ctx(self) -> Any:
        return self._ctx

    def metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(lc.llama_model_meta_count(self._model)):
            key = _read_str(lambda buf, n, i=i: lc.llama_model_meta_key_by_index(self._model, i, buf, n))
            out[key] = _read_str(lambda buf, n, i=i: lc.llama_model_meta_val_str_by_index(self._model, i, buf, n))
        return out

    def token_text(self, token: int) -> str:
        """The vocabulary's text for a token (e.g. "<|im_start|>"); "" for no token (-1)."""
        return token_text_of(self.vocab, token)

    def fim_tokens(self) -> tuple[int, int, int] | None:
        ids = (
            lc.llama_vocab_fim_pre(self.vocab),
            lc.llama_vocab_fim_suf(self.vocab),
            lc.llama_vocab_fim_mid(self.vocab),
        )
        return None if min(ids) < 0 else (int(ids[0]), int(ids[1]), int(ids[2]))

    def bos_eos(self) -> tuple[int, int]:
        return int(lc.llama_vocab_bos(self.vocab)), int(lc.llama_vocab_eos(self.vocab))

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        # The event loop may tokenize while the engine thread decodes (see ``tokenize_with``).
        with self._close_lock:  # the vocabulary dies with the model: never tokenize during close()
            if self._closed:
                raise BackendUnavailable("the llama.cpp engine is closed")
            return tokenize_with(self.vocab, text, add_special=add_special)

    def piece(self, token: int) -> tuple[bytes, bool]:
        """(bytes, is end-of-generation) for a sampled token; cached, so one ctypes call per id ever."""
        hit = self._pieces.get(token)
        if hit is None:
            n = lc.llama_token_to_piece(self.vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
            if n < 0:  # longer than the buffer: retry once with the exact size
                big = ctypes.create_string_buffer(-n)
                n = lc.llama_token_to_piece(self.vocab, token, big, -n, 0, False)
                data = big.raw[:n]
            else:
                data = self._piece_buf.raw[:n]
            hit = (data, bool(lc.llama_vocab_is_eog(self.vocab, token)))
            self._pieces[token] = hit
        return hit

    def eog_tokens(self) -> np.ndarray:
        """Every end-of-generation token id (ChatML's <|im_end|>, <|endoftext|>, ...), sorted.

        Found once, on first use: ~20 ms over a 49k vocabulary, paid by the first request that
        bans them rather than by every start-up."""
        if self._eog is None:
            is_eog = lc.llama_vocab_is_eog
            eog = np.array([t for t in range(self.n_vocab) if is_eog(self.vocab, t)], dtype=np.intp)
            eog.setflags(write=False)  # every request that bans them shares this one array
            self._eog = eog
        return self._eog

    def put(self, i: int, token: int, pos: int, seq_id: int, want_logits: bool) -> None:
        self.tok[i] = token
        self.pos[i] = pos
        self.seq[i][0] = seq_id
        self.logits[i] = want_logits

    def decode(self, n_tokens: int) -> int:
        self._batch.n_tokens = n_tokens
        return int(lc.llama_decode(self._ctx, self._batch))

    def output_logits(self, n_outputs: int) -> np.ndarray:
        """The last decode's logits as one (n_outputs, n_vocab) view of llama.cpp's buffer (no copy),
        one row per token that asked for logits, in batch order. Valid until the next decode."""
        data = lc.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(data, shape=(n_outputs, self.n_vocab))

    def set_sampler(self, seq_id: int, chain: Any) -> bool:
        """Run ``chain`` inside the decode graph for ``seq_id`` (None: detach it); False when the
        backend cannot run one of its stages. The chain must outlive the attachment."""
        return bool(lc.llama_set_sampler(self._ctx, seq_id, chain))

    def warmup(self) -> None:
        """Decode two throw-away tokens, as llama.cpp's tools do at start-up: the first decode pages
        in the mmap'd weights and builds the compute graph, which would otherwise land on the
        first user's time to first token."""
        bos, eos = self.bos_eos()
        tokens = [bos if bos >= 0 else 0, eos if eos >= 0 else 0][: self.n_batch]
        for i, token in enumerate(tokens):
            self.put(i, token, i, 0, i == len(tokens) - 1)
        rc = self.decode(len(tokens))
        self.seq_rm(0, -1)
        if rc != 0:
            raise BackendStartupError(f"llama.cpp failed its first decode (llama_decode returned {rc})")

    def seq_rm(self, seq_id: int, p0: int) -> bool:
        """Drop cells of ``seq_id`` from position ``p0`` on (``p0=-1``: the whole sequence)."""
        return bool(lc.llama_memory_seq_rm(self.memory, seq_id, p0, -1))

    def close(self) -> None:
        # Contexts others built on this model (the embedding context) are freed before it; outside
        # the lock, as a hook may wait for an embedding in flight that tokenizes.
        while self._close_hooks:
            self._close_hooks.pop()()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            lc.llama_batch_free(self._batch)
            lc.llama_free(self._ctx)
            lc.llama_model_free(self._model)

    # ---- for the embedding context and /detokenize ----
    @property
    def model(self) -> Any:
        """The ``llama_model`` pointer; another context may share it (weights are read-only)."""
        return self._model

    def on_close(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` at the start of ``close()``, before the model is freed."""
        self._close_hooks.append(hook)

    def detokenize(self, tokens: list[int]) -> str:
        """Text of ``tokens``, special tokens written out (see ``detokenize_with``)."""
        with self._close_lock:
            if self._closed:
                raise BackendUnavailable("the llama.cpp engine is closed")
            return detokenize_with(self.vocab, tokens, self.n_vocab)


def _read_str(call: Any) -> str:
    """Read a C string through a (buf, size) -> needed_len API, growing the buffer if needed."""
    size = 256
    while True:
        buf = ctypes.create_string_buffer(size)
        n = int(call(buf, size))
        if n < 0:
            return ""
        if n < size:
            return buf.value.decode("utf-8", errors="replace")
        size = n + 1
