"""Perplexity, KL divergence and top-1 agreement over a held-out text, scored as llama.cpp's
``llama-perplexity`` scores it, so our number for a GGUF can be checked against llama.cpp's own.

The text is tokenized once and cut into windows of ``n_ctx`` tokens (the first token of each
replaced by BOS when the model adds one); each window is evaluated from scratch and only its
second half is scored, so every scored token sees at least ``n_ctx / 2`` tokens of context.
Every variant gets the same token ids; KL divergence and top-1 agreement compare each scored
position's distribution with the reference variant's, whose log-probabilities are kept in a
float16 memory-mapped file while the rest of the ladder is evaluated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

# Window -> logits for each of its positions (float32, n_ctx x n_vocab).
LogitsFn = Callable[[list[int]], np.ndarray]
Progress = Callable[[int, int], None]


def heldout_text() -> str:
    """The held-out text shipped with the toolkit (public domain; see toolkit/data/HELDOUT.md)."""
    return resources.files("toolkit").joinpath("data/heldout.txt").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Windows:
    tokens: tuple[int, ...]
    n_ctx: int
    bos: int | None  # replaces each window's first token, as llama-perplexity does

    @property
    def count(self) -> int:
        return len(self.tokens) // self.n_ctx

    @property
    def first_scored(self) -> int:
        return self.n_ctx // 2

    @property
    def scored_per_window(self) -> int:
        return self.n_ctx - 1 - self.first_scored

    def limit(self, max_windows: int | None) -> Windows:
        if max_windows is None or max_windows >= self.count:
            return self
        return Windows(self.tokens[: max_windows * self.n_ctx], self.n_ctx, self.bos)

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.count):
            window = list(self.tokens[i * self.n_ctx : (i + 1) * self.n_ctx])
            if self.bos is not None:
                window[0] = self.bos
            yield window


@dataclass(frozen=True, slots=True)
class Quality:
    perplexity: float
    perplexity_stderr: float
    kl_divergence: float | None  # mean KL(reference || this) over scored tokens, nats
    top1_agreement: float | None  # fraction of scored tokens whose argmax matches the reference's
    scored_tokens: int
    windows: int
    n_ctx: int
    seconds: float


class ReferenceStore:
    """The reference variant's log-probabilities at every scored position (float16 on disk)."""

    def __init__(self, path: Path, windows: Windows, n_vocab: int, *, create: bool) -> None:
        shape = (windows.count, windows.scored_per_window, n_vocab)
        self.path = path
        self.logprobs: np.ndarray[Any, Any] = np.lib.format.open_memmap(  # type: ignore[no-untyped-call]
            path, mode="w+" if create else "r", dtype=np.float16, shape=shape if create else None
        )
        if self.logprobs.shape != shape:
            raise ValueError(f"reference {path.name} has shape {self.logprobs.shape}, expected {shape}")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    out: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return out


def evaluate(
    logits_fn: LogitsFn,
    windows: Windows,
    *,
    reference: ReferenceStore | None = None,
    record: ReferenceStore | None = None,
    progress: Progress | None = None,
) -> Quality:
    """Score every window with ``logits_fn``; compare with ``reference`` and/or write ``record``."""
    started = time.monotonic()
    first, n = windows.first_scored, windows.scored_per_window
    nll_sum = nll_sq = kl_sum = 0.0
    agree = count = 0
    for w, window in enumerate(windows):
        logits = np.asarray(logits_fn(window), dtype=np.float32)
        logp = _log_softmax(logits[first : first + n])
        targets = np.asarray(windows.tokens[w * windows.n_ctx + first + 1 : w * windows.n_ctx + first + 1 + n])
        nll = -logp[np.arange(n), targets].astype(np.float64)
        nll_sum += float(nll.sum())
        nll_sq += float((nll * nll).sum())
        count += n
        if record is not None:
            record.logprobs[w] = logp.astype(np.float16)
        if reference is not None:
            ref = reference.logprobs[w].astype(np.float32)
            kl_sum += float((np.exp(ref) * (ref - logp)).sum())
            agree += int((ref.argmax(axis=-1) == logp.argmax(axis=-1)).sum())
        if progress is not None:
            progress(w + 1, windows.count)
    if count == 0:
        raise ValueError(f"the text is shorter than one window of {windows.n_ctx} tokens")
    mean = nll_sum / count
    var = max(nll_sq / count - mean * mean, 0.0)
    ppl = math.exp(mean)
    return Quality(
        perplexity=ppl,
        perplexity_stderr=ppl * math.sqrt(var / max(count - 1, 1)),
        kl_divergence=kl_sum / count if reference is not None else None,
        top1_agreement=agree / count if reference is not None else None,
        scored_tokens=count,
        windows=windows.count,
        n_ctx=windows.n_ctx,
        seconds=time.monotonic() - started,
    )


# ---------------------------------------------------------------- llama.cpp (GGUF)


class GgufScorer:
    """A GGUF on llama.cpp, one window at a time (the KV cache cleared between windows)."""

    def __init__(
        self,
        path: Path,
        n_ctx: int,
        *,
        threads: int | None = None,
        cache_type_k: str = "f16",
        cache_type_v: str = "f16",
        flash_attn: bool = True,
    ) -> None:
        import llama_cpp

        from backends.llama_cpp.native import KV_CACHE_TYPES

        self.path = path
        self.llm = llama_cpp.Llama(
            str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=True,
            flash_attn=flash_attn,
            type_k=KV_CACHE_TYPES[cache_type_k],
            type_v=KV_CACHE_TYPES[cache_type_v],
            verbose=False,
        )
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))

    @property
    def n_vocab(self) -> int:
        return int(self.llm.n_vocab())

    def windows(self, text: str, n_ctx: int) -> Windows:
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=True)
        return Windows(tuple(tokens), n_ctx, self.llm.token_bos() if self.add_bos else None)

    def __call__(self, window: list[int]) -> np.ndarray:
        self.llm.reset()  # type: ignore[no-untyped-call]
        self.llm.eval(window)
        return np.asarray(self.llm.scores[: len(window)])

    def close(self) -> None:
        self.llm.close()
