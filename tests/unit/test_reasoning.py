"""The reasoning splitter at every split size, and where each real template leaves the model
(inside a block it opened, or before one), from llama.cpp's template corpus."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from backends.chat_format import HARMONY_THINK, THINK, detect
from backends.chat_template import ChatTemplate
from backends.reasoning import ReasoningMarkers, ReasoningSplitter, split_chunk, splitter_for, template_switches
from backends.types import (
    GenerationChunk,
    GenerationRequest,
    JsonConstraint,
    Message,
    ToolCall,
    ToolCallConstraint,
    ToolDef,
    Usage,
)
from toolkit.llama_tools import chat_templates

SIZES = [1, 2, 3, 5, 8, 13, 1000]


def split(markers: ReasoningMarkers, out: str, size: int, *, inside: bool = False) -> tuple[str, str]:
    splitter = ReasoningSplitter(markers, inside=inside)
    reasoning, text = "", ""
    for i in range(0, len(out), size):
        r, t = splitter.feed(out[i : i + size])
        reasoning, text = reasoning + r, text + t
    r, t = splitter.finish()
    return reasoning + r, text + t


@pytest.mark.parametrize("size", SIZES)
def test_a_block_the_model_opens(size: int) -> None:
    assert split(THINK, "<think>\nLet me add.\n</think>\n\nIt is 4.", size) == ("\nLet me add.\n", "It is 4.")


@pytest.mark.parametrize("size", SIZES)
def test_a_block_the_template_opened(size: int) -> None:
    assert split(THINK, "Adding.</think>It is 4.", size, inside=True) == ("Adding.", "It is 4.")


@pytest.mark.parametrize("size", SIZES)
def test_an_unclosed_block_is_all_reasoning(size: int) -> None:
    assert split(THINK, "<think>Still thinking and cut by max_to", size) == ("Still thinking and cut by max_to", "")
    assert split(THINK, "Still </thi", size, inside=True) == ("Still </thi", "")


@pytest.mark.parametrize("size", SIZES)
def test_no_block_and_a_late_marker_are_content(size: int) -> None:
    assert split(THINK, "It is 4.", size) == ("", "It is 4.")
    assert split(THINK, "It is <think>4</think>.", size) == ("", "It is <think>4</think>.")
    assert split(THINK, "<thinking>", size) == ("", "<thinking>")


HARMONY_CALL = "<|channel|>commentary to=functions.add <|constrain|>json<|message|>{}"


@pytest.mark.parametrize("size", SIZES)
def test_harmony_channels(size: int) -> None:
    """Analysis is reasoning, the final channel the answer, a commentary call stays for the call
    parser; the headers between them are neither (with or without an analysis first)."""
    analysis = "<|channel|>analysis<|message|>User asks 2+2.<|end|>"
    final = "<|start|>assistant<|channel|>final<|message|>4"
    assert split(HARMONY_THINK, analysis + final, size) == ("User asks 2+2.", "4")
    assert split(HARMONY_THINK, f"{analysis}<|start|>assistant{HARMONY_CALL}", size) == ("User asks 2+2.", HARMONY_CALL)
    assert split(HARMONY_THINK, "<|channel|>final<|message|>4", size) == ("", "4")
    assert split(HARMONY_THINK, HARMONY_CALL, size) == ("", HARMONY_CALL)
    assert split(HARMONY_THINK, analysis[:-3], size) == ("User asks 2+2.<|en", "")  # cut: all reasoning
    for cut in ("<|sta", "<|start|>assistant<|channel|>fi"):  # cut in a header: neither
        assert split(HARMONY_THINK, analysis + cut, size) == ("User asks 2+2.", "")


def test_the_real_gpt_oss_template_renders_reasoning_history_and_is_split() -> None:
    """llama.cpp's copy of gpt-oss's template reads an earlier turn's reasoning as ``thinking``;
    its generation prompt leaves the model before the analysis channel, not inside it."""
    template = _template("openai-gpt-oss-120b")
    assert template.format.reasoning == HARMONY_THINK and template.format.tool_format == "harmony"
    call = ToolCall("c1", "add", '{"a": 2}')
    history = (
        Message("user", "2+2?"),
        Message("assistant", "", tool_calls=(call,), reasoning="Use the tool."),
        Message("tool", "4", tool_call_id="c1"),
    )
    prompt = template.render(history, kwargs={"reasoning_effort": "low"})
    assert "<|channel|>analysis<|message|>Use the tool.<|end|>" in prompt and "Reasoning: low" in prompt
    assert prompt.endswith("<|start|>assistant") and not HARMONY_THINK.opened_by(prompt)


def test_split_chunks_count_reasoning_tokens_in_the_final_usage() -> None:
    splitter = ReasoningSplitter(THINK)
    pieces = ["<think>", "Add", "ing.", "</think>", "It", " is 4."]
    chunks = [GenerationChunk(text=p, tokens=1) for p in pieces]
    chunks[-1] = replace(chunks[-1], finish_reason="stop", usage=Usage(3, len(pieces)))
    out = [split_chunk(splitter, c) for c in chunks]
    assert "".join(c.reasoning for c in out) == "Adding." and "".join(c.text for c in out) == "It is 4."
    assert out[-1].usage == Usage(3, 6, reasoning_tokens=4)  # the block, its markers included


def test_template_switches() -> None:
    assert template_switches() == {}
    assert template_switches(enable=True) == {"enable_thinking": True}
    assert template_switches(effort="high") == {"reasoning_effort": "high"}
    assert template_switches(effort="none") == {"enable_thinking": False}


def _template(stem: str) -> ChatTemplate:
    (path,) = [p for p in chat_templates() if p.stem == stem]
    return ChatTemplate(path.read_text(), bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize(
    ("stem", "kwargs", "opened"),
    [
        ("Qwen-Qwen3-0.6B", {}, False),  # the model opens its block itself
        ("Qwen-Qwen3-0.6B", {"enable_thinking": False}, False),  # the template writes an empty, closed one
        # llama.cpp's copies of these open the block in the generation prompt ("<think>\n") and
        # close it again unless enable_thinking is true.
        ("Qwen-QwQ-32B", {"enable_thinking": True}, True),
        ("Qwen-QwQ-32B", {}, False),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", {"enable_thinking": True}, True),
        ("HuggingFaceTB-SmolLM3-3B", {"enable_thinking": False}, False),
    ],
)
def test_real_templates_say_whether_the_block_is_open(stem: str, kwargs: dict[str, object], opened: bool) -> None:
    template = _template(stem)
    assert template.format.reasoning == THINK
    history = (
        Message("user", "2+2?"),
        Message("assistant", "4", reasoning="Adding."),
        Message("user", "3+3?"),
    )
    prompt = template.render(history, kwargs=kwargs)
    assert THINK.opened_by(prompt) is opened


def test_families_without_markers_get_no_splitter() -> None:
    for stem in ("meta-llama-Llama-3.1-8B-Instruct", "Qwen-Qwen2.5-7B-Instruct", "google-gemma-2-2b-it"):
        assert _template(stem).format.reasoning is None
    assert detect("").reasoning is None


class _HarmonyTokenizer:
    """gpt-oss's tokenizer as far as vLLM's detokenization cares: its channel tokens are special."""

    SPECIAL = ("<|channel|>", "<|message|>", "<|end|>", "<|start|>", "<|call|>", "<|constrain|>", "<|return|>")
    all_special_ids = list(range(len(SPECIAL)))

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        parts = re.split("(" + "|".join(map(re.escape, self.SPECIAL)) + ")", text)
        return [self.SPECIAL.index(p) if p in self.SPECIAL else 100 for p in parts if p]


def test_vllm_keeps_special_tokens_only_where_the_familys_markers_are_made_of_them() -> None:
    from backends.call_formats import call_format
    from backends.vllm.convert import keeps_special_tokens

    tok = _HarmonyTokenizer()
    for stem, keeps in (("openai-gpt-oss-120b", True), ("Qwen-Qwen3-0.6B", False)):
        fmt = _template(stem).format
        assert keeps_special_tokens(tok, fmt, call_format(fmt.tool_format)) is keeps, stem


def test_output_forced_from_its_first_token_is_no_reasoning_in_an_opened_block() -> None:
    """A template that opened the block, and a grammar that makes the model answer at once (JSON,
    required calls): the block is never closed, and what the model wrote is the answer."""
    prompt = "<|im_start|>assistant\n<think>\n"
    call = ToolCallConstraint((ToolDef("f"),), required=True)
    for constraint, inside in (
        (None, True),
        (JsonConstraint(), False),
        (call, False),
        (replace(call, required=False), True),
    ):
        req = GenerationRequest("r", messages=(Message("user", "x"),), constraint=constraint)
        splitter = splitter_for(THINK, req, prompt)
        assert splitter is not None and splitter.thinking is inside, constraint
