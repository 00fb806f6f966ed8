"""Text <-> token ids through a llama.cpp vocabulary, and a vocabulary loaded without the weights.

The functions take a ``llama_vocab`` pointer, so the engine's full model and the server's
vocab-only copy (``Vocabulary``) tokenize through the same code. A vocab-only load reads the GGUF
header and token table but no tensor: it costs milliseconds and a few MB, which is what lets the
server tokenize, detokenize and name tokens itself while the weights live in the engine process.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

import llama_cpp as lc

from backends.checks import check_token_ids, check_unicode
from backends.errors import BackendStartupError, BackendUnavailable


def tokenize_with(vocab: Any, text: str, *, add_special: bool) -> list[int]:
    """Tokenize with special tokens parsed (chat templates contain them). Thread-safe: the
    vocabulary is read-only (llama-server tokenizes from its HTTP threads too)."""
    check_unicode(text, None)
    data = text.encode("utf-8")
    cap = len(data) + 8
    while True:
        buf = (lc.llama_token * cap)()
        n = lc.llama_tokenize(vocab, data, len(data), buf, cap, add_special, True)
        if n >= 0:
            return list(buf[:n])
        cap = -n


def detokenize_with(vocab: Any, tokens: list[int], n_vocab: int) -> str:
    """Text of ``tokens``, special tokens written out (as Hugging Face's ``decode`` does);
    ids are checked against the vocabulary first, llama.cpp does not check them."""
    check_token_ids(tokens, n_vocab)
    ids = (lc.llama_token * max(1, len(tokens)))(*tokens)
    cap = 8 * len(tokens) + 16
    while True:
        buf = ctypes.create_string_buffer(cap)
        n = lc.llama_detokenize(vocab, ids, len(tokens), buf, cap, False, True)
        if n >= 0:
            return buf.raw[:n].decode("utf-8", errors="replace")
        cap = -n


def token_text_of(vocab: Any, token: int) -> str:
    """The vocabulary's text for a token (e.g. "<|im_start|>"); "" for no token (-1)."""
    if token < 0:
        return ""
    raw = lc.llama_vocab_get_text(vocab, token)
    return raw.decode("utf-8", errors="replace") if raw else ""


class Vocabulary:
    """A GGUF's vocabulary alone (``vocab_only``); freed by ``close()``."""

    def __init__(self, model_path: Path) -> None:
        lc.llama_backend_init()
        params = lc.llama_model_default_params()
        params.vocab_only = True
        self._model = lc.llama_model_load_from_file(str(model_path).encode(), params)
        if not self._model:
            raise BackendStartupError(f"llama.cpp could not load {model_path.name} (not a valid GGUF?)")
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_vocab: int = lc.llama_vocab_n_tokens(self._vocab)
        self._lock = threading.Lock()  # the vocabulary dies with the model: never read it during close()
        self._closed = False

    def _open_vocab(self) -> Any:
        if self._closed:
            raise BackendUnavailable("the llama.cpp engine is closed")
        return self._vocab

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        with self._lock:
            return tokenize_with(self._open_vocab(), text, add_special=add_special)

    def detokenize(self, tokens: list[int]) -> str:
        with self._lock:
            return detokenize_with(self._open_vocab(), tokens, self.n_vocab)

    def token_text(self, token: int) -> str:
        with self._lock:
            return token_text_of(self._open_vocab(), token)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                lc.llama_model_free(self._model)
