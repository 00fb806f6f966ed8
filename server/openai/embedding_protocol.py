"""Request model of /v1/embeddings (OpenAI's). Validation failures become 400s naming the field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from backends.checks import is_unicode
from backends.embeddings import EmbeddingInput
from server.openai.protocol import StrictModel
from server.runtime.keep_alive import KeepAlive

# OpenAI's own limit on inputs in one embeddings request.
MAX_EMBEDDING_INPUTS = 2048


class EmbeddingBody(StrictModel):
    model: str = Field(min_length=1)
    # A text, texts, one tokenized text, or several (OpenAI's four shapes).
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None  # accepted, as OpenAI does; nothing to do with it locally
    keep_alive: KeepAlive | None = None  # Ollama's: how long the model stays loaded afterwards

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: str | list[str] | list[int] | list[list[int]]) -> Any:
        items = _items(value)
        if not items:
            raise ValueError("must not be empty")
        if len(items) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs are allowed per request, got {len(items)}")
        for i, item in enumerate(items):
            if not item:
                raise ValueError(f"input[{i}] is empty; every input must contain text or tokens")
            if isinstance(item, str) and not is_unicode(item):
                raise ValueError(f"input[{i}] is not valid Unicode (it holds a lone surrogate)")
        return value

    def inputs(self) -> tuple[EmbeddingInput, ...]:
        return tuple(item if isinstance(item, str) else tuple(item) for item in _items(self.input))


def _items(value: str | list[str] | list[int] | list[list[int]]) -> list[str] | list[list[int]]:
    if isinstance(value, str):
        return [value]
    if value and isinstance(value[0], int):
        return [value]  # one tokenized input
    return value  # type: ignore[return-value]
