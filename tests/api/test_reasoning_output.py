"""Reasoning comes back apart from the answer, on the real SmolLM2 GGUF, on every route: chat's
reasoning_content, the Messages API's thinking blocks and the Responses API's reasoning items
(those two through the official SDKs, in process).

SmolLM2 does not reason, so a GBNF grammar forces the markers into its output (chat's ``grammar``
field; the other two APIs have none, so the tests add it where their requests are translated);
the template is SmolLM2's own layout plus the reasoning block a thinking family's template has
(one that lets the model open it, one that opens it itself)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from backends.types import GrammarConstraint
from server.anthropic import translate as messages_translation
from server.responses_api import translate as responses_translation
from server.routes import messages as messages_route
from server.routes import responses as responses_route
from server.settings import Settings
from tests.api.helpers import CAPITAL, MODEL, chat_body, parse_sse
from tests.conftest import AppClient, ClientFactory

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
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
async def thinker(app_client: ClientFactory, make_settings: Callable[..., Settings]) -> AsyncIterator[AppClient]:
    async with app_client(make_settings({"n_ctx": 1024, "chat_template": MODEL_OPENS})) as c:
        yield c


@pytest.fixture(scope="module")
async def opener(app_client: ClientFactory, make_settings: Callable[..., Settings]) -> AsyncIterator[AppClient]:
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


# ---- the Messages and Responses APIs, through the official SDKs ------------------------------
SDKs = Callable[[AppClient], tuple[anthropic.AsyncAnthropic, openai.AsyncOpenAI]]


@pytest.fixture
async def sdks() -> AsyncIterator[SDKs]:
    """``sdks(app)``: the anthropic and openai SDKs' async clients on that in-process app, closed
    after the test."""
    made: list[anthropic.AsyncAnthropic | openai.AsyncOpenAI] = []

    def make(app: AppClient) -> tuple[anthropic.AsyncAnthropic, openai.AsyncOpenAI]:
        def http() -> httpx2.AsyncClient:
            # The SDKs' own HTTP package (httpx2, not httpx), on the app's ASGI interface.
            return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app.app), timeout=120)

        claude = anthropic.AsyncAnthropic(base_url="http://testserver", api_key="k", max_retries=0, http_client=http())
        oai = openai.AsyncOpenAI(base_url="http://testserver/v1", api_key="k", max_retries=0, http_client=http())
        made.extend((claude, oai))
        return claude, oai

    yield make
    for client in made:
        await client.close()


@pytest.fixture
def force(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """``force(grammar)``: the Messages and Responses requests of this test carry the grammar,
    added where the routes translate them (neither API has a grammar field)."""

    def apply(gbnf: str) -> None:
        def messages(*args: Any, **kwargs: Any) -> Any:
            return replace(messages_translation.messages_request(*args, **kwargs), constraint=GrammarConstraint(gbnf))

        def responses(*args: Any, **kwargs: Any) -> Any:
            out = responses_translation.responses_request(*args, **kwargs)
            return replace(out, request=replace(out.request, constraint=GrammarConstraint(gbnf)))

        monkeypatch.setattr(messages_route, "messages_request", messages)
        monkeypatch.setattr(responses_route, "responses_request", responses)

    yield apply


Thought = tuple[anthropic.AsyncAnthropic, openai.AsyncOpenAI, dict[str, object]]


@pytest.fixture
async def thought(thinker: AppClient, sdks: SDKs, force: Callable[[str], None]) -> Thought:
    """Both SDKs on the app whose model opens its block, THOUGHT forced on both APIs, and chat's
    message for the same question (its split is what the other APIs must return)."""
    force(THOUGHT)
    return (*sdks(thinker), await _message(thinker, grammar=THOUGHT))


async def test_thinking_blocks_through_the_anthropic_sdk(thought: Thought) -> None:
    claude, _, chat = thought
    msg = await claude.messages.create(model=MODEL, max_tokens=60, messages=CAPITAL, extra_body=GREEDY)
    thinking, text = msg.content
    assert isinstance(thinking, anthropic.types.ThinkingBlock) and isinstance(text, anthropic.types.TextBlock)
    assert (thinking.thinking, thinking.signature, text.text) == (chat["reasoning_content"], "", chat["content"])

    async with claude.messages.stream(model=MODEL, max_tokens=60, messages=CAPITAL, extra_body=GREEDY) as stream:
        kinds = [event.type async for event in stream]
        streamed = await stream.get_final_message()
    shown = {"type", "thinking", "signature", "text"}  # the stream's blocks are its Parsed* subclasses
    assert [b.model_dump(include=shown) for b in streamed.content] == [b.model_dump(include=shown) for b in msg.content]
    assert kinds.index("thinking") < kinds.index("signature") < kinds.index("text")

    cut = await claude.messages.create(model=MODEL, max_tokens=7, messages=CAPITAL, extra_body=GREEDY)
    assert [b.type for b in cut.content] == ["thinking"] and cut.stop_reason == "max_tokens"


async def test_the_thinking_param_and_thinking_history(opener: AppClient, sdks: SDKs) -> None:
    claude, _ = sdks(opener)
    off = await claude.messages.create(
        model=MODEL, max_tokens=8, messages=CAPITAL, thinking={"type": "disabled"}, extra_body=GREEDY
    )
    assert [b.type for b in off.content] == ["text"]  # the template closed the block it opens

    answered: Any = {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]}
    thought: Any = {"type": "thinking", "thinking": "the capital of france is paris", "signature": ""}
    follow_up: Any = {"role": "user", "content": "And of Germany?"}
    counts = []
    for turn in (answered, {**answered, "content": [thought, *answered["content"]]}):
        counted = await claude.messages.count_tokens(model=MODEL, messages=[*CAPITAL, turn, follow_up])
        counts.append(counted.input_tokens)
    assert counts[1] > counts[0]  # the thinking went back into the prompt


async def test_reasoning_items_through_the_openai_sdk(thought: Thought) -> None:
    _, oai, chat = thought
    question = CAPITAL[0]["content"]
    resp = await oai.responses.create(model=MODEL, input=question, max_output_tokens=60, temperature=0)
    reasoning, message = resp.output
    assert reasoning.type == "reasoning" and message.type == "message"
    assert reasoning.content is not None and reasoning.content[0].text == chat["reasoning_content"]
    assert resp.output_text == chat["content"]
    usage = resp.usage
    assert usage is not None and 0 < usage.output_tokens_details.reasoning_tokens < usage.output_tokens

    async with oai.responses.stream(model=MODEL, input=question, max_output_tokens=60, temperature=0) as stream:
        kinds = [event.type async for event in stream]
        streamed = await stream.get_final_response()

    def texts(output: list[Any]) -> list[tuple[str, str]]:
        return [(i.type, i.content[0].text) for i in output]

    assert texts(streamed.output) == texts(resp.output)
    assert kinds.index("response.reasoning_text.delta") < kinds.index("response.reasoning_text.done")
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")

    stored = await oai.responses.retrieve(resp.id)
    assert stored.output == resp.output
    # The stored conversation keeps the reasoning: the same prompt as sending its items back.
    more = "And of Germany?"
    after = await oai.responses.create(model=MODEL, previous_response_id=resp.id, input=more, max_output_tokens=1)
    items: Any = [i.model_dump(exclude_none=True) for i in resp.output]
    sent_back = await oai.responses.create(
        model=MODEL, input=[CAPITAL[0], *items, {"role": "user", "content": more}], max_output_tokens=1
    )
    without = await oai.responses.create(
        model=MODEL, input=[CAPITAL[0], items[1], {"role": "user", "content": more}], max_output_tokens=1
    )
    assert after.usage and sent_back.usage and without.usage
    assert after.usage.input_tokens == sent_back.usage.input_tokens > without.usage.input_tokens


async def test_reasoning_effort_none_turns_thinking_off(opener: AppClient, sdks: SDKs) -> None:
    _, oai = sdks(opener)
    resp = await oai.responses.create(
        model=MODEL,
        input=CAPITAL[0]["content"],
        max_output_tokens=8,
        temperature=0,
        reasoning={"effort": "none"},
        include=["reasoning.encrypted_content"],
    )
    assert [i.type for i in resp.output] == ["message"] and resp.reasoning is not None
    assert resp.reasoning.effort == "none"
