"""OpenAI response and chunk objects, for chat and for completions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from backends.types import Usage


def usage_dict(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


@dataclass(frozen=True, slots=True)
class Shape:
    """Everything that differs between /v1/chat/completions and /v1/completions."""

    id: str
    model: str
    chat: bool
    created: int = field(default_factory=lambda: int(time.time()))

    def _choice(self, text: str | None, finish_reason: str | None, *, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
                delta["content"] = ""
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

    def chunk(
        self,
        text: str | None = None,
        finish_reason: str | None = None,
        *,
        role: bool = False,
        include_usage: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [self._choice(text, finish_reason, role=role)],
        }
        if include_usage:
            body["usage"] = None  # OpenAI: null on every chunk but the last, usage-only one
        return body

    def usage_chunk(self, usage: Usage | None) -> dict[str, Any]:
        body = self.chunk(include_usage=True)
        body["choices"] = []
        body["usage"] = usage_dict(usage)
        return body

    def full(self, text: str, finish_reason: str | None, usage: Usage | None) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [choice],
            "usage": usage_dict(usage),
        }
