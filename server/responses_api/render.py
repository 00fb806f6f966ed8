"""Response objects and output items from engine output."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from backends.types import Message, ToolCall, Usage
from server.openai.choices import ChoiceState, Delta
from server.responses_api.protocol import ResponsesRequest


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage_dict(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(id_: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    """``text=None``: the item as first announced, before its content part."""
    content = [] if text is None else [text_part(text)]
    return {"id": id_, "type": "message", "status": status, "role": "assistant", "content": content}


def reasoning_part(text: str) -> dict[str, Any]:
    return {"type": "reasoning_text", "text": text}


def reasoning_item(id_: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    """The model's reasoning, as OpenAI returns an open-weight model's (gpt-oss) in full: a
    ``reasoning_text`` part; no summary (none is written). ``text=None``: as first announced."""
    content = [] if text is None else [reasoning_part(text)]
    return {"id": id_, "type": "reasoning", "status": status, "summary": [], "content": content}


def call_item(id_: str, call: ToolCall, status: str = "completed", arguments: str | None = None) -> dict[str, Any]:
    return {
        "id": id_,
        "type": "function_call",
        "status": status,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
    }


def output_items(delta: Delta) -> list[dict[str, Any]]:
    """What one engine delta adds to the output, as whole items in order: its reasoning as a
    reasoning item, its text as a message, then each tool call as a function_call. The one place
    engine output becomes Responses items (streamed or not)."""
    items: list[dict[str, Any]] = []
    if delta.reasoning:
        items.append(reasoning_item(item_id("rs"), delta.reasoning))
    if delta.text:
        items.append(message_item(item_id("msg"), delta.text))
    items.extend(call_item(item_id("fc"), call) for call in delta.calls)
    return items


def after(history: tuple[Message, ...], state: ChoiceState) -> tuple[Message, ...]:
    """The conversation a later ``previous_response_id`` continues: the history plus this answer."""
    text = "".join(state.text)
    content = text.strip() if state.calls else text
    reasoning = "".join(state.reasoning) or None
    return (*history, Message("assistant", content, tool_calls=tuple(state.calls), reasoning=reasoning))


@dataclass(frozen=True, slots=True)
class ResponseShape:
    id: str
    req: ResponsesRequest
    created_at: int = field(default_factory=lambda: int(time.time()))

    def body(
        self, status: str, output: list[dict[str, Any]], usage: Usage | None = None, finish: str | None = None
    ) -> dict[str, Any]:
        req = self.req
        incomplete = {"reason": "max_output_tokens"} if finish == "length" else None
        if incomplete is not None and status == "completed":
            status = "incomplete"
        choice = req.tool_choice
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "model": req.model,
            "output": output,
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": req.previous_response_id,
            "reasoning": req.reasoning.model_dump(exclude_none=True) if req.reasoning else None,
            "store": req.store is not False,
            "temperature": 1.0 if req.temperature is None else req.temperature,
            "text": req.text.model_dump(by_alias=True, exclude_none=True) if req.text else {"format": {"type": "text"}},
            "tool_choice": choice.model_dump()
            if choice is not None and not isinstance(choice, str)
            else choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in req.tools or ()],
            "top_p": 1.0 if req.top_p is None else req.top_p,
            "truncation": "disabled",
            "usage": usage_dict(usage),
            "user": req.user,
            "metadata": req.metadata or {},
        }

    def full(self, state: ChoiceState) -> dict[str, Any]:
        text = "".join(state.text)
        if state.calls:
            text = text.strip()  # the whitespace a model leaves around its calls is not an answer
        output = output_items(Delta(text, "".join(state.reasoning), calls=list(state.calls)))
        return self.body("completed", output, state.usage, state.finish_reason)
