"""Each family's calls read back from streamed output, however the text is split."""

from __future__ import annotations

import json

import pytest

from backends.call_formats import FORMATS, call_format
from backends.call_parser import FormatCallParser
from backends.types import ToolCall

SCHEMAS = {
    "get_weather": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
}
KNOWN = frozenset(SCHEMAS)
PARIS = {"city": "Paris", "days": 2}
ROME = {"city": "Rome", "days": 1}
DS = "\uff5c"
SP = "\u2581"


def ds(name: str) -> str:
    return f"<{DS}{name.replace(' ', SP)}{DS}>"


def _args(a: dict[str, object]) -> str:
    return json.dumps(a)


# family -> (output with calls, number of calls); each output is written as the family's model writes it.
OUTPUTS: dict[str, tuple[str, int]] = {
    "llama3_json": (f'{{"name": "get_weather", "parameters": {_args(PARIS)}}}', 1),
    "mistral_nemo": (
        f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {_args(PARIS)}, "id": "abcDEF123"}}, '
        f'{{"name": "get_weather", "arguments": {_args(ROME)}}}]',
        2,
    ),
    "mistral": (f"[TOOL_CALLS]get_weather[ARGS]{_args(PARIS)}[TOOL_CALLS]get_weather[ARGS]{_args(ROME)}", 2),
    "deepseek_r1": (
        ds("tool calls begin")
        + ds("tool call begin")
        + f"function{ds('tool sep')}get_weather\n```json\n{_args(PARIS)}\n```"
        + ds("tool call end")
        + "\n"
        + ds("tool call begin")
        + f"function{ds('tool sep')}get_weather\n```json\n{_args(ROME)}\n```"
        + ds("tool call end")
        + ds("tool calls end"),
        2,
    ),
    "deepseek_v3_1": (
        ds("tool calls begin")
        + ds("tool call begin")
        + f"get_weather{ds('tool sep')}{_args(PARIS)}"
        + ds("tool call end")
        + ds("tool call begin")
        + f"get_weather{ds('tool sep')}{_args(ROME)}"
        + ds("tool call end")
        + ds("tool calls end"),
        2,
    ),
    "granite": (
        f'<|tool_call|>[{{"name": "get_weather", "arguments": {_args(PARIS)}}}, '
        f'{{"name": "get_weather", "arguments": {_args(ROME)}}}]',
        2,
    ),
    "functionary_v3_1": (
        f"<function=get_weather>{_args(PARIS)}</function><function=get_weather>{_args(ROME)}</function>",
        2,
    ),
    # gpt-oss stops on <|call|> (an end-of-generation token), so the output may end without it.
    "harmony": (f"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{_args(PARIS)}", 1),
    "qwen3_coder": (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n"
        "</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n"
        "</parameter>\n<parameter=days>\n1\n</parameter>\n</function>\n</tool_call>",
        2,
    ),
}


def feed_all(family: str, out: str, size: int) -> tuple[str, list[ToolCall]]:
    parser = FormatCallParser(FORMATS[family], KNOWN, SCHEMAS)
    text, calls = "", []
    for i in range(0, len(out), size):
        t, c = parser.feed(out[i : i + size])
        text, calls = text + t, calls + c
    t, c = parser.finish()
    return text + t, calls + c


def test_every_family_but_hermes_has_an_output_here() -> None:
    assert set(OUTPUTS) == set(FORMATS) - {"hermes"}


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 10_000])
@pytest.mark.parametrize("family", sorted(OUTPUTS))
def test_calls_are_found_however_the_text_is_split(family: str, size: int) -> None:
    out, n = OUTPUTS[family]
    text, calls = feed_all(family, "Let me check. " + out, size)
    assert text == "Let me check. "
    assert [json.loads(c.arguments) for c in calls] == [PARIS, ROME][:n]
    assert {c.name for c in calls} == {"get_weather"}
    assert len({c.id for c in calls}) == n


@pytest.mark.parametrize("family", sorted(OUTPUTS))
def test_a_call_of_an_unknown_function_stays_text(family: str) -> None:
    out = OUTPUTS[family][0].replace("get_weather", "rm_rf")
    assert feed_all(family, out, 4) == (out, [])


@pytest.mark.parametrize("family", sorted(OUTPUTS))
def test_text_without_calls_is_all_content(family: str) -> None:
    assert feed_all(family, "The weather is fine [today] {maybe} <b>.", 3) == (
        "The weather is fine [today] {maybe} <b>.",
        [],
    )


def test_mistral_call_ids_are_nine_alphanumerics() -> None:
    _, calls = feed_all("mistral", OUTPUTS["mistral"][0], 7)
    assert all(len(c.id) == 9 and c.id.isalnum() for c in calls)


def test_unimplemented_families_fall_back_to_hermes() -> None:
    assert call_format("functionary_v3_2") is FORMATS["hermes"]


def test_an_unfinished_xml_call_is_not_a_call() -> None:
    cut = "<tool_call>\n<function=get_weather>\n<parameter=city>\nPar"
    assert feed_all("qwen3_coder", cut, 3) == (cut, [])
