"""The reasoning splitter at every split size, and where each real template leaves the model
(inside a block it opened, or before one), from llama.cpp's template corpus."""

from __future__ import annotations

import pytest

from backends.chat_format import HARMONY_THINK, THINK, detect
from backends.chat_template import ChatTemplate
from backends.reasoning import ReasoningMarkers, ReasoningSplitter
from backends.types import Message
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


@pytest.mark.parametrize("size", SIZES)
def test_harmony_channels(size: int) -> None:
    out = "<|channel|>analysis<|message|>User asks 2+2.<|end|><|start|>assistant<|channel|>final<|message|>4"
    assert split(HARMONY_THINK, out, size) == ("User asks 2+2.", "4")


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
