"""The backend contract every engine implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from backends.call_formats import FORMATS, CallFormat
from backends.embeddings import EmbeddingRequest, EmbeddingResult, TokenizeRequest, TokenizeResult
from backends.errors import UnsupportedParameter
from backends.memplan import MemoryPlan
from backends.types import BackendInfo, Device, EngineStats, GenerationChunk, GenerationRequest, ModelSpec, Support


class BackendOptions(BaseModel):
    """Per-backend options; ``extra="forbid"`` so a typo in a config fails at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Backend(ABC):
    """One loaded model on one engine.

    ``generate`` yields deltas; errors detectable before the first token (prompt too long,
    bad parameter, queue full) are raised before the first ``yield`` so the HTTP layer can
    still answer with a real status. Closing the iterator cancels the engine work.
    """

    name: ClassVar[str]
    Options: ClassVar[type[BackendOptions]]

    def __init__(self, spec: ModelSpec, options: BackendOptions) -> None:
        self.spec = spec
        self.options = options

    @classmethod
    def parse_options(cls, raw: dict[str, Any]) -> BackendOptions:
        return cls.Options.model_validate(raw)

    @classmethod
    @abstractmethod
    def supports(cls, spec: ModelSpec, device: Device) -> Support:
        """Can this backend serve ``spec`` on ``device``? If not, say why (no engine import)."""

    @abstractmethod
    async def start(self) -> None:
        """Load weights. Raises ``BackendStartupError`` with a cause and a remedy."""

    @abstractmethod
    async def stop(self) -> None:
        """Release the engine; idempotent."""

    @abstractmethod
    async def check_health(self) -> None:
        """Raise ``BackendUnavailable`` if the model cannot serve right now."""

    @abstractmethod
    def info(self) -> BackendInfo: ...

    @abstractmethod
    def stats(self) -> EngineStats: ...

    @abstractmethod
    def generate(self, req: GenerationRequest) -> AsyncIterator[GenerationChunk]: ...

    def call_format(self) -> CallFormat:
        """The tool-call syntax this model is prompted, constrained and parsed with (its family's
        when the engine can enforce it, else Hermes)."""
        return FORMATS["hermes"]

    def memory_plan(self) -> MemoryPlan | None:
        """What loading this model will take (``backends.memplan``), before it is loaded; None
        when the engine cannot say. The server budgets loads with it."""
        return None

    # ---- optional capabilities: a backend without them answers 400 unsupported_parameter ----
    def _cannot(self, what: str) -> UnsupportedParameter:
        return UnsupportedParameter(f"model {self.spec.id!r} (backend {self.name}) cannot {what}.", param="model")

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResult:
        """One unit-length vector per input. Raises before any work on an input that cannot fit."""
        raise self._cannot("compute embeddings")

    async def tokenize(self, req: TokenizeRequest) -> TokenizeResult:
        """The token ids the model would see for a prompt or a chat (template applied)."""
        raise self._cannot("tokenize")

    async def detokenize(self, tokens: list[int]) -> str:
        """The text of ``tokens``; an id outside the vocabulary is an ``InvalidRequest`` on ``tokens``."""
        raise self._cannot("detokenize")
