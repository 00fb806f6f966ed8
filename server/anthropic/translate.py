"""Anthropic Messages request -> engine-neutral GenerationRequest (and the prompt count_tokens counts)."""

from __future__ import annotations

import json
from typing import Any

from backends.embeddings import TokenizeRequest
from backends.errors import InvalidRequest, UnsupportedParameter
from backends.reasoning import template_switches
from backends.tools import choose_tools, tools_or_format
from backends.types import (
    GenerationRequest,
    JsonConstraint,
    Message,
    SamplingParams,
    ToolCall,
    ToolDef,
)
from server.anthropic.protocol import (
    CountTokensRequest,
    InputMessage,
    MessagesRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
)
from server.openai.translate import capped_max_tokens, check_message_count
from server.runtime.pool import ModelLimits


def conversation(req: CountTokensRequest, max_messages: int | None = None) -> tuple[Message, ...]:
    """System prompt and turns as engine messages: ``tool_use`` blocks become the assistant's tool
    calls, ``tool_result`` blocks the tool turns that answer them (before the user's own text),
    ``thinking`` blocks the assistant turn's reasoning (templates that show past reasoning read it)."""
    check_message_count(len(req.messages), max_messages)
    out: list[Message] = []
    system = req.system_text()
    if system:
        out.append(Message("system", system))
    for i, msg in enumerate(req.messages):
        out.extend(_turn(msg, f"messages.{i}.content"))
    if req.messages[-1].role == "assistant":
        raise UnsupportedParameter(
            "a final assistant message (a prefill for the model to continue) is not supported; "
            "end the conversation with a user message.",
            param="messages",
        )
    return tuple(out)


def _turn(msg: InputMessage, param: str) -> list[Message]:
    if isinstance(msg.content, str):
        return [Message(msg.role, msg.content)]
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for block in msg.content:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ThinkingBlock | RedactedThinkingBlock):
            if msg.role != "assistant":
                raise InvalidRequest(f"{block.type} blocks belong in assistant messages.", param=param)
            if isinstance(block, ThinkingBlock):
                thoughts.append(block.thinking)
        elif isinstance(block, ToolUseBlock):
            if msg.role != "assistant":
                raise InvalidRequest("tool_use blocks belong in assistant messages.", param=param)
            calls.append(ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False)))
        elif isinstance(block, ToolResultBlock):
            if msg.role != "user":
                raise InvalidRequest("tool_result blocks belong in user messages.", param=param)
            text = block.text()
            results.append(
                Message("tool", f"Error: {text}" if block.is_error else text, tool_call_id=block.tool_use_id)
            )
    text = "".join(texts)
    if msg.role == "assistant":
        reasoning = "".join(thoughts) if thoughts else None
        return [Message("assistant", text, tool_calls=tuple(calls), reasoning=reasoning)]
    return [*results, Message("user", text)] if text or not results else results


def _tool_choice(req: CountTokensRequest) -> tuple[tuple[ToolDef, ...], str | None, bool]:
    """Anthropic's tool_choice in the shared terms: auto, any (= required), tool (that name), none."""
    defs = tuple(ToolDef(t.name, t.description or "", t.input_schema) for t in req.tools or ())
    choice = req.tool_choice
    if choice is None:
        return defs, None, True
    if isinstance(choice, ToolChoiceNone):
        return defs, "none", True
    if isinstance(choice, ToolChoiceTool):
        return defs, choice.name, False
    name = "required" if isinstance(choice, ToolChoiceAny) else "auto"
    return defs, name, not choice.disable_parallel_tool_use


def messages_request(
    req: MessagesRequest,
    request_id: str,
    limits: ModelLimits = ModelLimits(),  # noqa: B008 - immutable
    max_messages: int | None = None,
) -> GenerationRequest:
    messages = conversation(req, max_messages)
    output = req.output_config
    fmt = output.format if output is not None else None
    json = JsonConstraint(fmt.schema_) if fmt is not None else None
    defs, choice, parallel = _tool_choice(req)
    tools, constraint = tools_or_format(defs, choice, json, parallel=parallel, format_param="output_config.format")
    sampling = SamplingParams(
        max_tokens=capped_max_tokens(req.max_tokens, limits),
        temperature=1.0 if req.temperature is None else req.temperature,  # Anthropic's default
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        stop=tuple(req.stop_sequences or ()),
    )
    return GenerationRequest(
        request_id=request_id,
        sampling=sampling,
        messages=messages,
        max_prompt_tokens=limits.max_prompt_tokens,
        queue_timeout_s=limits.queue_timeout_s,
        tools=tools,
        constraint=constraint,
        template_kwargs=_switches(req),
    )


def _switches(req: CountTokensRequest) -> dict[str, Any]:
    """``thinking`` and ``output_config.effort`` as the template's reasoning switches."""
    thinking = req.thinking
    enable = None if thinking is None or thinking.type == "adaptive" else thinking.type == "enabled"
    effort = req.output_config.effort if isinstance(req, MessagesRequest) and req.output_config else None
    return template_switches(enable=enable, effort=effort)


def shows_thinking(req: MessagesRequest) -> bool:
    """False when the client asked for the thinking to be left out (``display: "omitted"``)."""
    return req.thinking is None or req.thinking.display != "omitted"


def count_request(req: CountTokensRequest, max_messages: int | None = None) -> TokenizeRequest:
    """The prompt a Messages request with these fields would send, as the tokenizer sees it."""
    defs, choice, parallel = _tool_choice(req)
    tools, _ = choose_tools(defs, choice, parallel=parallel)
    return TokenizeRequest(
        messages=conversation(req, max_messages), add_special_tokens=False, tools=tools, template_kwargs=_switches(req)
    )
