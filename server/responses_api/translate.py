"""Responses API request -> engine-neutral GenerationRequest; fields we cannot honour are refused by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.errors import InvalidRequest, UnsupportedParameter
from backends.tools import tools_or_format
from backends.types import Constraint, GenerationRequest, JsonConstraint, Message, SamplingParams, ToolCall, ToolDef
from server.openai.translate import capped_max_tokens, check_message_count
from server.responses_api.protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionChoice,
    ResponsesRequest,
    TextFormatJsonObject,
    TextFormatJsonSchema,
)
from server.runtime.pool import ModelLimits

_UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "include": bool,
    "reasoning": lambda v: v is not None,
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
            raise UnsupportedParameter(
                f"'{field}' is not supported by this server yet; remove it from the request.", param=field
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
    )
    return Translated(generation, history)


def input_messages(req: ResponsesRequest) -> list[Message]:
    """Input items as engine messages: function_call items join the assistant turn they follow,
    function_call_output items become tool turns."""
    if req.input is None:
        return []
    if isinstance(req.input, str):
        return [Message("user", req.input)]
    out: list[Message] = []
    for item in req.input:
        if isinstance(item, FunctionCallItem):
            call = ToolCall(item.call_id, item.name, item.arguments)
            last = out[-1] if out else None
            if last is not None and last.role == "assistant":
                out[-1] = Message("assistant", last.content, tool_calls=(*last.tool_calls, call))
            else:
                out.append(Message("assistant", "", tool_calls=(call,)))
        elif isinstance(item, FunctionCallOutputItem):
            out.append(Message("tool", item.text(), tool_call_id=item.call_id))
        else:
            # "developer" is OpenAI's newer name for the system role; templates know "system".
            out.append(Message("system" if item.role == "developer" else item.role, item.text()))
    return out


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
