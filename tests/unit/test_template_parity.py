"""Our chat-template rendering against transformers' ``apply_chat_template``, on every real
template vendored in the pinned llama-cpp-python sdist (llama.cpp's own test corpus, unpacked
into the cache by ``toolkit.llama_tools``; never copied into this repository).

Each template renders a set of conversations (plain, system, multi-turn, tools, tool results,
reasoning history, chat_template_kwargs, documents). Wherever transformers renders one, ours must
give the identical text; where transformers refuses it, ours must refuse it too (a 400, not a
crash). Templates that do not know tools get our tool preamble instead of the tool list: for those
the comparison feeds transformers the same rewritten messages.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from backends.chat_template import ChatTemplate
from backends.errors import InvalidRequest
from backends.reasoning import reasoning_fields
from backends.tools import openai_tools, template_messages
from backends.types import Message, ToolCall, ToolDef
from toolkit.llama_tools import chat_templates

log = logging.getLogger(__name__)

WEATHER = ToolDef(
    "get_weather",
    "Current weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string", "description": "City & country <name>"}}},
)
CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
DOCS = ({"title": "Paris", "text": "Paris is the capital of France."},)

# name -> (messages, tools, chat_template_kwargs, documents)
Conversation = tuple[tuple[Message, ...], tuple[ToolDef, ...], dict[str, Any], tuple[dict[str, Any], ...] | None]
CONVERSATIONS: dict[str, Conversation] = {
    "plain": ((Message("user", "Hello!"),), (), {}, None),
    "system": ((Message("system", "Answer briefly."), Message("user", "Hello!")), (), {}, None),
    "multi-turn": (
        (
            Message("system", "Answer briefly."),
            Message("user", "Hello!"),
            Message("assistant", "Hi, how can I help?"),
            Message("user", "Capital of France?"),
        ),
        (),
        {},
        None,
    ),
    "tools": ((Message("user", "Weather in Paris?"),), (WEATHER,), {}, None),
    "tool-results": (
        (
            Message("user", "Weather in Paris?"),
            Message("assistant", "", tool_calls=(CALL,)),
            Message("tool", '{"temperature": 21}', tool_call_id="call_1"),
        ),
        (WEATHER,),
        {},
        None,
    ),
    "reasoning-history": (
        (
            Message("user", "2+2?"),
            Message("assistant", "4", reasoning="Two plus two is four."),
            Message("user", "And 3+3?"),
        ),
        (),
        {},
        None,
    ),
    "thinking-off": ((Message("user", "Hello!"),), (), {"enable_thinking": False}, None),
    "documents": ((Message("user", "What is the capital?"),), (), {}, DOCS),
}

TEMPLATES = chat_templates()


def _openai_dict(m: Message) -> dict[str, Any]:
    """The message as a client writes it for transformers (arguments as a mapping, HF's convention)."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:  # content stays "" beside the calls, as quantserve passes it
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.loads(c.arguments)}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.reasoning is not None:
        # Under both names templates read it (gpt-oss's reads "thinking"), as quantserve passes it.
        out.update(reasoning_fields(m.reasoning))
    return out


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")), bos_token="<s>", eos_token="</s>"
    )


def _transformers(source: str, name: str) -> str | None:
    messages, tools, kwargs, documents = CONVERSATIONS[name]
    ours = ChatTemplate(source)
    if ours.native_tools:
        payload = [_openai_dict(m) for m in messages]
        shown = openai_tools(tools) or None
    else:  # our preamble and text tool turns: transformers gets what we give the template
        payload = template_messages(messages, tools, native=False)
        shown = None
    try:
        out = _tokenizer().apply_chat_template(
            payload,
            tools=shown,
            documents=list(documents) if documents else None,
            chat_template=source,
            add_generation_prompt=True,
            tokenize=False,
            **kwargs,
        )
    except Exception as exc:  # the template refuses this conversation (raise_exception, or a bug)
        log.info("transformers cannot render %s: %s", name, exc)
        return None
    assert isinstance(out, str)
    return out


def test_the_corpus_is_there() -> None:
    assert len(TEMPLATES) >= 70


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_renders_exactly_as_transformers(path: Path) -> None:
    source = path.read_text()
    ours = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    compared = 0
    for name, (messages, tools, kwargs, documents) in CONVERSATIONS.items():
        expected = _transformers(source, name)
        if expected is None:
            with pytest.raises(InvalidRequest):
                ours.render(messages, tools=tools, kwargs=kwargs, documents=documents)
            continue
        got = ours.render(messages, tools=tools, kwargs=kwargs, documents=documents)
        assert got == expected, f"{path.stem} / {name}"
        compared += 1
    log.info("%s: %d of %d conversations compared", path.stem, compared, len(CONVERSATIONS))
