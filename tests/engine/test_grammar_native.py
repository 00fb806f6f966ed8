"""The grammars llama.cpp enforces, checked token by token on the real SmolLM2 vocabulary.

A lazy (tool_choice "auto") grammar must leave text free until "<tool_call>" appears and from
then on allow only a valid call; a required one must allow nothing but a call from the start.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import llama_cpp as lc

from backends.llama_cpp import grammar as gr
from backends.types import JsonConstraint, ToolCallConstraint, ToolDef

WEATHER = ToolDef("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}})


def tokens(vocab: Any, text: str) -> list[int]:
    data = text.encode()
    buf = (lc.llama_token * (len(data) + 8))()
    n = lc.llama_tokenize(vocab, data, len(data), buf, len(buf), False, True)
    assert n > 0
    return list(buf[:n])


def allowed(smpl: Any, candidates: list[int]) -> list[bool]:
    """Which candidate tokens the grammar leaves possible at this point."""
    data = (lc.llama_token_data * len(candidates))(*(lc.llama_token_data(t, 0.0, 0.0) for t in candidates))
    arr = lc.llama_token_data_array(data, len(candidates), -1, False)
    lc.llama_sampler_apply(smpl, ctypes.byref(arr))
    return [not math.isinf(data[i].logit) for i in range(len(candidates))]


def accept(smpl: Any, ids: list[int]) -> None:
    for t in ids:
        lc.llama_sampler_accept(smpl, t)


def test_lazy_tool_grammar_is_free_until_the_tag_then_strict(vocab: Any) -> None:
    smpl = gr.sampler(gr.build(ToolCallConstraint((WEATHER,), required=False)), vocab)
    try:
        (hello,) = tokens(vocab, " hello")
        brace = tokens(vocab, "{")[0]
        assert allowed(smpl, [hello, brace]) == [True, True]  # free text before any call
        accept(smpl, tokens(vocab, "Let me check. <tool_call>\n"))
        assert allowed(smpl, [hello, brace]) == [False, True]  # inside a call: JSON only
        accept(smpl, tokens(vocab, '{"name": "'))
        assert allowed(smpl, tokens(vocab, "get")[:1] + tokens(vocab, "rm")[:1]) == [True, False]  # known names only
    finally:
        lc.llama_sampler_free(smpl)


def test_required_tool_grammar_allows_only_a_call_from_the_start(vocab: Any) -> None:
    smpl = gr.sampler(gr.build(ToolCallConstraint((WEATHER,), required=True)), vocab)
    try:
        (hello,) = tokens(vocab, " hello")
        lt = tokens(vocab, "<")[0]
        assert allowed(smpl, [hello, lt]) == [False, True]
    finally:
        lc.llama_sampler_free(smpl)


def test_json_grammar_rejects_a_raw_newline_inside_a_string(vocab: Any) -> None:
    smpl = gr.sampler(gr.build(JsonConstraint({"type": "object", "properties": {"a": {"type": "string"}}})), vocab)
    try:
        accept(smpl, tokens(vocab, '{"a": "x'))
        newline = tokens(vocab, "\n")[0]
        letter = tokens(vocab, "y")[0]
        assert allowed(smpl, [newline, letter]) == [False, True]
    finally:
        lc.llama_sampler_free(smpl)
