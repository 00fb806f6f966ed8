"""What the llama.cpp backend needs from an engine.

The backend owns OpenAI-free concerns shared by every engine (chat template, context checks);
the engine owns the llama.cpp context: tokenizing, decoding, sampling, cancellation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from backends.types import Constraint, EngineStats, GenerationChunk, SamplingParams


class LlamaEngine(Protocol):
    @property
    def n_ctx(self) -> int:
        """Context window available to ONE request (never silently divided across slots)."""
        ...

    @property
    def metadata(self) -> Mapping[str, str]:
        """GGUF metadata (chat template, architecture, file type ...)."""
        ...

    @property
    def bos_text(self) -> str:
        """Text of the BOS token (chat templates render it themselves)."""
        ...

    @property
    def eos_text(self) -> str:
        """Text of the EOS token."""
        ...

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        """Tokenize with special tokens parsed (chat templates contain them)."""
        ...

    @property
    def fim_tokens(self) -> tuple[int, int, int] | None:
        """(prefix, suffix, middle) fill-in-the-middle token ids, None if the model has none."""
        ...

    @property
    def n_vocab(self) -> int: ...

    @property
    def alive(self) -> bool:
        """Whether the engine can still run requests (its thread has not died)."""
        ...

    @property
    def failure(self) -> str | None:
        """Why the engine died, if it crashed: shown by health checks."""
        ...

    def generate(
        self,
        request_id: str,
        prompt_tokens: list[int],
        sampling: SamplingParams,
        constraint: Constraint | None = None,
        *,
        queue_timeout_s: float | None = None,
    ) -> AsyncIterator[GenerationChunk]:
        """Stream deltas for one request. The prompt is already known to fit ``n_ctx``.

        ``constraint`` is enforced by a grammar; one that cannot compile raises ``InvalidRequest``.

        The last chunk has ``finish_reason`` and ``usage``. Closing the iterator frees the
        request's slot and KV cells. Queue-full raises ``Overloaded`` before the first yield;
        still waiting for a slot after ``queue_timeout_s``, the stream raises ``QueueTimeout``.
        """
        ...

    def stats(self) -> EngineStats: ...

    def close(self) -> None: ...


class Vocab(Protocol):
    """Text <-> token ids without generating (what /tokenize, /detokenize and embeddings need)."""

    @property
    def n_vocab(self) -> int: ...

    def tokenize(self, text: str, *, add_special: bool) -> list[int]: ...

    def detokenize(self, tokens: list[int]) -> str: ...

    def token_text(self, token: int) -> str: ...
