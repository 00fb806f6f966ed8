"""OpenAI response and chunk objects, for chat and for completions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.types import TokenLogprob, ToolCall, Usage
from server.openai.choices import ChoiceState, Delta


def usage_dict(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _chat_logprob(lp: TokenLogprob) -> dict[str, Any]:
    return {
        "token": lp.token,
        "logprob": lp.logprob,
        "bytes": list(lp.bytes),
        "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in lp.top],
    }


def _legacy_logprobs(entries: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """Completions' older logprobs object; ``offset`` is where the first token's text starts."""
    offsets = []
    for lp in entries:
        offsets.append(offset)
        offset += len(lp.token)
    return {
        "tokens": [lp.token for lp in entries],
        "token_logprobs": [lp.logprob for lp in entries],
        "top_logprobs": [{t.token: t.logprob for t in lp.top} for lp in entries],
        "text_offset": offsets,
    }


def _reasoning(text: str) -> dict[str, str]:
    # llama-server (and DeepSeek's API) name it reasoning_content; vLLM has since renamed it
    # reasoning. Both, so clients of either read it.
    return {"reasoning_content": text, "reasoning": text}


def _call_dict(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


@dataclass(frozen=True, slots=True)
class ResponseRenderer:
    """Everything that differs between /v1/chat/completions and /v1/completions."""

    id: str
    model: str
    chat: bool
    logprobs: bool = False  # the client asked for logprobs: choices carry them (else null)
    created: int = field(default_factory=lambda: int(time.time()))

    def _envelope(self, choices: list[dict[str, Any]], include_usage: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = None  # OpenAI: null on every chunk but the last, usage-only one
        return body

    def role_chunk(self, index: int, *, include_usage: bool) -> dict[str, Any]:
        delta = {"role": "assistant", "content": ""}
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
        return self._envelope([choice], include_usage)

    def delta_chunks(self, state: ChoiceState, delta: Delta, *, include_usage: bool) -> list[dict[str, Any]]:
        """The chunks one delta becomes: content (with its logprobs), each tool call as a header
        chunk (id, name) then its arguments, as OpenAI streams them, then the finish."""
        out: list[dict[str, Any]] = []
        if delta.reasoning and self.chat:
            delta_body = _reasoning(delta.reasoning)
            choice = {"index": state.index, "delta": delta_body, "logprobs": None, "finish_reason": None}
            out.append(self._envelope([choice], include_usage))
        if delta.text or delta.logprobs:
            if self.chat:
                lp = {"content": [_chat_logprob(x) for x in delta.logprobs], "refusal": None} if self.logprobs else None
                choice = {"index": state.index, "delta": {"content": delta.text}, "logprobs": lp, "finish_reason": None}
            else:
                legacy = _legacy_logprobs(delta.logprobs, state.text_offset) if self.logprobs else None
                choice = {"index": state.index, "text": delta.text, "logprobs": legacy, "finish_reason": None}
            state.text_offset += len(delta.text)
            out.append(self._envelope([choice], include_usage))
        first_call = len(state.calls) - len(delta.calls)
        for k, call in enumerate(delta.calls, start=first_call):
            head = {"index": k, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            args = {"index": k, "function": {"arguments": call.arguments}}
            for part in (head, args):
                choice = {
                    "index": state.index,
                    "delta": {"tool_calls": [part]},
                    "logprobs": None,
                    "finish_reason": None,
                }
                out.append(self._envelope([choice], include_usage))
        if delta.finish_reason is not None:
            if self.chat:
                choice = {"index": state.index, "delta": {}, "logprobs": None, "finish_reason": delta.finish_reason}
            else:
                choice = {"index": state.index, "text": "", "logprobs": None, "finish_reason": delta.finish_reason}
            out.append(self._envelope([choice], include_usage))
        return out

    def usage_chunk(self, usage: Usage | None) -> dict[str, Any]:
        body = self._envelope([], include_usage=True)
        body["usage"] = usage_dict(usage)
        return body

    def full(self, states: Sequence[ChoiceState], usage: Usage | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [self._full_choice(s) for s in states],
            "usage": usage_dict(usage),
        }

    def _full_choice(self, s: ChoiceState) -> dict[str, Any]:
        text = "".join(s.text)
        if not self.chat:
            legacy = _legacy_logprobs(s.logprobs, 0) if self.logprobs else None
            return {"index": s.index, "text": text, "logprobs": legacy, "finish_reason": s.finish_reason}
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        reasoning = "".join(s.reasoning)
        if reasoning:
            message.update(_reasoning(reasoning))
        if s.calls:
            # OpenAI sends null content with tool calls unless the model also wrote text.
            message["content"] = text.strip() or None
            message["tool_calls"] = [_call_dict(c) for c in s.calls]
        lp = {"content": [_chat_logprob(x) for x in s.logprobs], "refusal": None} if self.logprobs else None
        return {"index": s.index, "message": message, "logprobs": lp, "finish_reason": s.finish_reason}
