"""Reasoning comes back apart from the answer, on the real SmolLM2 GGUF.

SmolLM2 does not reason, so a GBNF grammar (the ``grammar`` request field) forces the markers
into its output; the template is SmolLM2's own layout plus the reasoning block a thinking
family's template has (one that lets the model open it, one that opens it itself)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest

from server.settings import Settings
from tests.api.helpers import chat_body, parse_sse

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]

TURNS = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}<|im_end|>\n"
    "{% endfor %}"
)
MODEL_OPENS = TURNS + "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
TEMPLATE_OPENS = TURNS + (
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n"
    "{% if enable_thinking is defined and not enable_thinking %}</think>\n{% endif %}{% endif %}"
)
THOUGHT = 'root ::= "<think>" [a-z ]{3,30} "</think>" answer\nanswer ::= " " [A-Za-z ]{3,30}\n'
CONTINUED = 'root ::= [a-z ]{3,30} "</think>" " " [A-Za-z ]{3,30}\n'


@pytest.fixture(scope="module")
async def thinker(
    app_client: ClientFactory, make_settings: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_settings({"n_ctx": 1024, "chat_template": MODEL_OPENS})) as c:
        yield c


@pytest.fixture(scope="module")
async def opener(app_client: ClientFactory, make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_settings({"n_ctx": 1024, "chat_template": TEMPLATE_OPENS})) as c:
        yield c


async def _message(client: httpx.AsyncClient, **fields: object) -> dict[str, object]:
    resp = await client.post("/v1/chat/completions", json=chat_body(**{"max_tokens": 60, **fields}))
    assert resp.status_code == 200, resp.text
    message = resp.json()["choices"][0]["message"]
    assert isinstance(message, dict)
    return message


async def test_reasoning_is_returned_apart_from_the_content(thinker: httpx.AsyncClient) -> None:
    message = await _message(thinker, grammar=THOUGHT)
    reasoning, content = message["reasoning_content"], message["content"]
    assert isinstance(reasoning, str) and isinstance(content, str)
    assert reasoning and content and message["reasoning"] == reasoning
    assert "<think>" not in content and "</think>" not in content and "think>" not in reasoning


async def test_streamed_deltas_carry_the_same_split(thinker: httpx.AsyncClient) -> None:
    message = await _message(thinker, grammar=THOUGHT)
    resp = await thinker.post(
        "/v1/chat/completions", json=chat_body(max_tokens=60, temperature=0, grammar=THOUGHT, stream=True)
    )
    deltas = [e["choices"][0]["delta"] for e in parse_sse(resp.text)[:-1] if e["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == message["reasoning_content"]
    assert "".join(d.get("content", "") for d in deltas) == message["content"]
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all("reasoning_content" not in d for d in deltas[first_content:])  # reasoning comes first


async def test_raw_text_on_request(thinker: httpx.AsyncClient) -> None:
    split = await _message(thinker, grammar=THOUGHT)
    raw = await _message(thinker, grammar=THOUGHT, reasoning_format="none")
    assert "reasoning_content" not in raw
    assert raw["content"] == f"<think>{split['reasoning_content']}</think> {split['content']}"
    hidden = await _message(thinker, grammar=THOUGHT, include_reasoning=False)
    assert "reasoning_content" not in hidden and hidden["content"] == split["content"]


async def test_a_truncated_block_is_all_reasoning(thinker: httpx.AsyncClient) -> None:
    message = await _message(thinker, grammar=THOUGHT, max_tokens=7)
    assert message["reasoning_content"] and message["content"] == ""


async def test_a_block_the_template_opened(opener: httpx.AsyncClient) -> None:
    message = await _message(opener, grammar=CONTINUED)
    assert message["reasoning_content"] and message["content"]
    assert "think>" not in str(message["content"])


async def test_enable_thinking_false_leaves_only_content(opener: httpx.AsyncClient) -> None:
    message = await _message(opener, chat_template_kwargs={"enable_thinking": False}, max_tokens=8)
    assert "reasoning_content" not in message and message["content"]


async def test_reasoning_history_goes_back_into_the_prompt(thinker: httpx.AsyncClient) -> None:
    plain = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "3+3?"},
    ]
    with_history = [*plain]
    with_history[1] = {**plain[1], "reasoning_content": "two plus two is four"}
    sizes = []
    for messages in (plain, with_history):
        resp = await thinker.post("/v1/chat/completions", json=chat_body(messages=messages, max_tokens=1))
        assert resp.status_code == 200, resp.text
        sizes.append(resp.json()["usage"]["prompt_tokens"])
    assert sizes[1] > sizes[0]
