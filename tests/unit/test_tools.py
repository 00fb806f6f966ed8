"""The tool-call parser (streamed output -> content + calls), the tool preamble and grammars."""

from __future__ import annotations

import json

import pytest

from backends import tools as tl
from backends.errors import InvalidRequest
from backends.llama_cpp import grammar as gr
from backends.types import JsonConstraint, Message, ToolCall, ToolCallConstraint, ToolDef

KNOWN = frozenset({"get_weather"})
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def feed_all(pieces: list[str]) -> tuple[str, list[ToolCall]]:
    parser = tl.ToolCallParser(KNOWN)
    text, calls = "", []
    for piece in pieces:
        t, c = parser.feed(piece)
        text, calls = text + t, calls + c
    t, c = parser.finish()
    return text + t, calls + c


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_calls_are_found_however_the_text_is_split(size: int) -> None:
    out = f"Let me check.{CALL}\n{CALL}\n"
    text, calls = feed_all([out[i : i + size] for i in range(0, len(out), size)])
    assert text == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})] * 2
    assert len({c.id for c in calls}) == 2


def test_partial_tag_is_held_back_and_released_when_it_is_not_a_tag() -> None:
    parser = tl.ToolCallParser(KNOWN)
    assert parser.feed("a <tool") == ("a ", [])
    assert parser.feed("box> b") == ("<toolbox> b", [])


def test_invalid_or_unknown_calls_stay_visible_as_text() -> None:
    bad = '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'
    assert feed_all([bad]) == (bad, [])
    broken = "<tool_call>{not json</tool_call>"
    assert feed_all([broken]) == (broken, [])


def test_unclosed_but_complete_call_at_the_end_counts() -> None:
    text, calls = feed_all(['<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}'])
    assert text == "" and json.loads(calls[0].arguments) == {"city": "Rome"}


def test_tool_turns_become_text_for_templates_without_tools() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    messages = [
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "31 degrees", tool_call_id="call_1"),
        Message("tool", "sunny", tool_call_id="call_1"),
    ]
    out = tl.template_messages(messages, (ToolDef("get_weather"),), native=False)
    assert out[0]["role"] == "system" and "<tools>" in out[0]["content"]
    assert out[2] == {"role": "assistant", "content": tl.call_text(call)}
    assert out[3]["role"] == "user" and out[3]["content"].count("<tool_response>") == 2
    assert len(out) == 4  # the two results share one turn


def test_native_templates_get_structured_tool_turns() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    out = tl.template_messages([Message("assistant", "", tool_calls=(call,))], (), native=True)
    assert out[0]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}


def test_json_grammar_forbids_raw_control_characters_in_strings() -> None:
    text = gr.build(JsonConstraint({"type": "object", "properties": {"a": {"type": "string"}}})).text
    char_rule = next(line for line in text.splitlines() if line.startswith("char ::="))
    assert r"\x00-\x1F" in char_rule


def test_tool_grammar_is_lazy_only_for_auto() -> None:
    tools = (ToolDef("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}}),)
    required = gr.build(ToolCallConstraint(tools, required=True))
    auto = gr.build(ToolCallConstraint(tools, required=False))
    assert not required.lazy and auto.lazy
    assert required.text.startswith('root ::= tool-call ("\\n" tool-call)*')
    single = gr.build(ToolCallConstraint(tools, required=True, parallel=False))
    assert single.text.startswith("root ::= tool-call\n")


def test_huge_schema_bounds_are_refused_before_building_a_grammar() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 10**9}}}
    with pytest.raises(InvalidRequest) as err:
        gr.build(JsonConstraint(schema))
    assert err.value.param == "response_format" and "maxLength" in err.value.message
