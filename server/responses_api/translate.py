"""Responses API request -> engine-neutral GenerationRequest; fields we cannot honour are refused by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.errors import InvalidRequest, UnsupportedParameter
from backends.reasoning import template_switches
from backends.tools import tools_or_format
from backends.types import Constraint, GenerationRequest, JsonConstraint, Message, SamplingParams, ToolCall, ToolDef
from server.openai.translate import capped_max_tokens, check_message_count
from server.responses_api.protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionChoice,
    ReasoningItem,
    ResponsesRequest,
    TextFormatJsonObject,
    TextFormatJsonSchema,
)
from server.runtime.pool import ModelLimits

# Clients that keep no state ask for "reasoning.encrypted_content" (Codex always does) so they can
# send the reasoning back; this server's reasoning items already carry it, readable, in "content".
_INCLUDABLE = frozenset({"reasoning.encrypted_content"})
_UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "include": lambda v: bool(set(v or ()) - _INCLUDABLE),
    "background": bool,
    "conversation": lambda v: v is not None,
    "prompt": lambda v: v is not None,
    "max_tool_calls": lambda v: v is not None,
    "top_logprobs": bool,
    "truncation": lambda v: v == "auto",
}


@dataclass(frozen=True, slots=True)
class Translated:
    request: GenerationRequest
    # The turns this response continues (earlier ones and this input, without instructions: as
    # OpenAI specifies, instructions do not carry over to the next response).
    history: tuple[Message, ...]


def responses_request(
    req: ResponsesRequest,
    request_id: str,
    earlier: tuple[Message, ...],
    limits: ModelLimits = ModelLimits(),  # noqa: B008 - immutable
    max_messages: int | None = None,
) -> Translated:
    """``earlier``: the stored conversation of ``previous_response_id`` (empty without one)."""
    for field, asks_for_it in _UNSUPPORTED.items():
        if asks_for_it(getattr(req, field)):
            only = f" (only {', '.join(sorted(_INCLUDABLE))} is)" if field == "include" else ""
            raise UnsupportedParameter(
                f"'{field}' is not supported by this server yet{only}; remove it from the request.", param=field
            )
    if req.text is not None and req.text.verbosity is not None:
        raise UnsupportedParameter("'text.verbosity' is not supported by this server.", param="text.verbosity")
    history = (*earlier, *input_messages(req))
    if not history:
        raise InvalidRequest("The request has no input (and no previous_response_id).", param="input")
    check_message_count(len(history), max_messages, param="input")
    system = (Message("system", req.instructions),) if req.instructions else ()
    tools, constraint = _tools_and_constraint(req)
    sampling = SamplingParams(
        max_tokens=capped_max_tokens(req.max_output_tokens, limits, "max_output_tokens"),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
    )
    generation = GenerationRequest(
        request_id=request_id,
        sampling=sampling,
        messages=(*system, *history),
        max_prompt_tokens=limits.max_prompt_tokens,
        queue_timeout_s=limits.queue_timeout_s,
        tools=tools,
        constraint=constraint,
        template_kwargs=template_switches(effort=req.reasoning.effort if req.reasoning else None),
    )
    return Translated(generation, history)


def input_messages(req: ResponsesRequest) -> list[Message]:
    """Input items as engine messages: a reasoning item opens the assistant turn it led to (its
    reasoning); an assistant message and function_call items join the assistant turn they
    follow; function_call_output items become tool turns."""
    if req.input is None:
        return []
    if isinstance(req.input, str):
        return [Message("user", req.input)]
    out: list[Message] = []
    for item in req.input:
        last = out[-1] if out and out[-1].role == "assistant" else None
        if isinstance(item, ReasoningItem):
            if last is not None and _only_reasoning(last):
                out[-1] = dataclasses.replace(last, reasoning=f"{last.reasoning}{item.text()}")
            else:
                out.append(Message("assistant", "", reasoning=item.text()))
        elif isinstance(item, FunctionCallItem):
            call = ToolCall(item.call_id, item.name, item.arguments)
            if last is not None:
                out[-1] = dataclasses.replace(last, tool_calls=(*last.tool_calls, call))
            else:
                out.append(Message("assistant", "", tool_calls=(call,)))
        elif isinstance(item, FunctionCallOutputItem):
            out.append(Message("tool", item.text(), tool_call_id=item.call_id))
        elif item.role == "assistant" and last is not None and _only_reasoning(last):
            out[-1] = dataclasses.replace(last, content=item.text())
        else:
            # "developer" is OpenAI's newer name for the system role; templates know "system".
            out.append(Message("system" if item.role == "developer" else item.role, item.text()))
    # A sealed reasoning item (no text) opened its turn but gives it no reasoning to show.
    return [dataclasses.replace(m, reasoning=None) if m.reasoning == "" else m for m in out]


def _only_reasoning(turn: Message) -> bool:
    """An assistant turn a reasoning item opened, with nothing said yet."""
    return turn.reasoning is not None and not turn.content and not turn.tool_calls


def _tools_and_constraint(req: ResponsesRequest) -> tuple[tuple[ToolDef, ...], Constraint | None]:
    fmt = req.text.format if req.text is not None else None
    json: JsonConstraint | None = None
    if isinstance(fmt, TextFormatJsonObject):
        json = JsonConstraint()
    elif isinstance(fmt, TextFormatJsonSchema):
        json = JsonConstraint(fmt.schema_)
    defs = tuple(ToolDef(t.name, t.description or "", t.parameters or {"type": "object"}) for t in req.tools or ())
    choice = req.tool_choice
    named = choice.name if isinstance(choice, FunctionChoice) else choice
    return tools_or_format(defs, named, json, parallel=req.parallel_tool_calls is not False, format_param="text.format")
