"""Anthropic and Responses requests -> engine messages and constraints; engine output -> their events."""

from __future__ import annotations

import json

from backends.types import JsonConstraint, Message, ToolCall, ToolCallConstraint
from server.anthropic.events import _Blocks
from server.anthropic.protocol import MessagesRequest
from server.anthropic.render import stop_reason
from server.anthropic.translate import messages_request
from server.openai.choices import Delta
from server.responses_api.protocol import ResponsesRequest
from server.responses_api.translate import responses_request

TOOL = {"name": "f", "description": "d", "input_schema": {"type": "object"}}


def test_anthropic_blocks_become_calls_and_tool_turns() -> None:
    req = MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 5,
            "system": [{"type": "text", "text": "Be brief."}],
            "tools": [TOOL],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True},
                        {"type": "text", "text": "and?"},
                    ],
                },
            ],
        }
    )
    gen = messages_request(req, "r")
    assert gen.messages == (
        Message("system", "Be brief."),
        Message("user", "hi"),
        Message("assistant", "", tool_calls=(ToolCall("t1", "f", '{"a": 1}'),)),
        Message("tool", "Error: boom", tool_call_id="t1"),
        Message("user", "and?"),
    )
    assert gen.sampling.stop == ("END",) and gen.sampling.max_tokens == 5
    assert isinstance(gen.constraint, ToolCallConstraint)
    assert gen.constraint.required and not gen.constraint.parallel


def test_anthropic_output_format_is_a_json_constraint() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string"}}}
    req = MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
        }
    )
    assert messages_request(req, "r").constraint == JsonConstraint(schema)


def test_stop_reasons() -> None:
    assert stop_reason("stop", None) == "end_turn"
    assert stop_reason("stop", "END") == "stop_sequence"
    assert stop_reason("length", None) == "max_tokens"
    assert stop_reason("tool_calls", None) == "tool_use"


def test_whitespace_before_a_tool_call_opens_no_text_block() -> None:
    blocks = _Blocks()
    assert blocks.events(Delta("\n")) == []
    events = blocks.events(Delta("", calls=[ToolCall("c", "f", "{}")]))
    assert [json.loads(e["data"])["type"] for e in events] == [
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
    ]
    assert blocks.finish(called_tools=True) == []
    text_only = _Blocks()
    assert text_only.events(Delta(" ")) == []
    kinds = [json.loads(e["data"])["type"] for e in text_only.finish(called_tools=False)]
    assert kinds == ["content_block_start", "content_block_delta", "content_block_stop"]


def test_responses_items_and_history() -> None:
    req = ResponsesRequest.model_validate(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "dev"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
            "max_output_tokens": 7,
        }
    )
    earlier = (Message("user", "before"),)
    out = responses_request(req, "r", earlier)
    calls = (ToolCall("c1", "f", "{}"), ToolCall("c2", "f", "{}"))
    history = (
        Message("user", "before"),
        Message("system", "dev"),
        Message("user", "hi"),
        Message("assistant", "", tool_calls=calls),
        Message("tool", "ok", tool_call_id="c1"),
    )
    assert out.history == history
    assert out.request.messages == (Message("system", "Be brief."), *history)  # instructions are not history
    assert out.request.sampling.max_tokens == 7
