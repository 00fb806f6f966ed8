"""Anthropic message objects from engine output: content blocks, stop reason, usage."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from backends.types import ToolCall, Usage
from server.openai.choices import ChoiceState, Delta

# Engine finish reasons (after ChoiceState: a turn that called tools ends with "tool_calls").
_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use"}


def stop_reason(finish: str | None, stop_sequence: str | None) -> str:
    if finish == "stop" and stop_sequence is not None:
        return "stop_sequence"
    return _STOP_REASONS.get(finish or "", "end_turn")


def usage_dict(usage: Usage | None) -> dict[str, int]:
    """Anthropic counts prompt tokens read from the cache apart from the rest of the input."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def tool_use_block(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": json.loads(call.arguments)}


def thinking_block(thinking: str) -> dict[str, str]:
    # Anthropic signs thinking so it can tell its own when a client sends it back; a local model's
    # thinking has nothing to prove. Empty, as llama-server sends it; the SDKs accept that.
    return {"type": "thinking", "thinking": thinking, "signature": ""}


def delta_blocks(delta: Delta) -> list[dict[str, Any]]:
    """What one engine delta adds to the message, as whole content blocks in order: its
    reasoning (a thinking block), its text, then each tool call. The one place engine output
    becomes Anthropic blocks (streamed or not)."""
    blocks: list[dict[str, Any]] = []
    if delta.reasoning:
        blocks.append(thinking_block(delta.reasoning))
    if delta.text:
        blocks.append({"type": "text", "text": delta.text})
    blocks.extend(tool_use_block(call) for call in delta.calls)
    return blocks


@dataclass(frozen=True, slots=True)
class MessageRenderer:
    id: str
    model: str

    def message(
        self,
        content: list[dict[str, Any]],
        stop: str | None = None,
        stop_sequence: str | None = None,
        usage: Usage | None = None,
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": stop_sequence,
            "usage": usage_dict(usage),
        }

    def full(self, state: ChoiceState, stop_sequence: str | None) -> dict[str, Any]:
        text = "".join(state.text)
        if state.calls:
            text = text.strip()  # the whitespace a model leaves around its calls is not an answer
        content = delta_blocks(Delta(text, "".join(state.reasoning), calls=list(state.calls)))
        reason = stop_reason(state.finish_reason, stop_sequence)
        return self.message(content, reason, stop_sequence if reason == "stop_sequence" else None, state.usage)
