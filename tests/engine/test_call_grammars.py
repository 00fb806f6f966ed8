"""Each family's call grammar on the real SmolLM2 vocabulary, token by token: it admits exactly
that family's calls (the known function, arguments valid for it), nothing else; lazily (tool_choice
"auto") only from the family's trigger on."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import llama_cpp as lc
import pytest

from backends import tools as tl
from backends.call_formats import FORMATS
from backends.llama_cpp import grammar as gr
from backends.types import ToolCallConstraint, ToolDef
from tests.engine.test_grammar_native import accept, allowed, tokens

WEATHER = ToolDef(
    "get_weather",
    "",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
)
ARGS = json.dumps({"city": "Paris", "days": 2})
XML = (
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>"
)
FAMILIES = sorted(set(FORMATS) - {"hermes"})


@pytest.fixture(autouse=True)
def quiet_llama_log() -> Iterator[None]:
    # llama.cpp logs the lazy grammar's trigger text, cut mid-character for DeepSeek's markers;
    # llama-cpp-python's log callback cannot decode that (the server keeps this logger at ERROR).
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def call_text(family: str, name: str = "get_weather") -> str:
    if family == "qwen3_coder":
        return XML.replace("get_weather", name)
    return FORMATS[family].example(name, ARGS)


def first_refused(vocab: Any, family: str, text: str, *, required: bool = True) -> int | None:
    """Index of the first token of ``text`` the family's grammar refuses (None: all admitted)."""
    smpl = gr.sampler(gr.build(ToolCallConstraint((WEATHER,), required=required, format=family)), vocab)
    try:
        for i, t in enumerate(tokens(vocab, text)):
            if allowed(smpl, [t]) != [True]:
                return i
            accept(smpl, [t])
        return None
    finally:
        lc.llama_sampler_free(smpl)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_familys_call_is_admitted(vocab: Any, family: str) -> None:
    assert first_refused(vocab, family, call_text(family)) is None


@pytest.mark.parametrize("family", FAMILIES)
def test_an_unknown_function_is_refused(vocab: Any, family: str) -> None:
    assert first_refused(vocab, family, call_text(family, "get_weath3r")) is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_arguments_must_fit_the_schema(vocab: Any, family: str) -> None:
    bad = call_text(family).replace('"days": 2', '"days": "two"').replace("\n2\n", "\ntwo\n")
    assert first_refused(vocab, family, bad) is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_another_familys_form_is_refused(vocab: Any, family: str) -> None:
    hermes = f'{tl.OPEN}\n{{"name": "get_weather", "arguments": {ARGS}}}\n{tl.CLOSE}'
    assert first_refused(vocab, family, hermes) is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_auto_leaves_text_free_until_the_trigger(vocab: Any, family: str) -> None:
    assert first_refused(vocab, family, "Let me check that. " + call_text(family), required=False) is None
