"""The official anthropic SDK against a real server process: /v1/messages and count_tokens.

Only SDK calls: its own parsers (the Message model, the stream's event accumulator, its typed
errors) are what must accept every response and stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from tests.e2e.conftest import Server

MODEL = "smollm2-135m-instruct"
QUESTION: list[Any] = [{"role": "user", "content": "Which city is the capital of France?"}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


# The SDK no longer has sampling arguments; Claude Code and other clients still send them.
GREEDY = {"temperature": 0}


MakeAnthropic = Callable[..., anthropic.Anthropic]


@pytest.fixture
def make_client() -> Iterator[MakeAnthropic]:
    """``make_client(server, key=...)``: an anthropic SDK client closed after the test."""
    made: list[anthropic.Anthropic] = []

    def make(server: Server, key: str = "sk-test") -> anthropic.Anthropic:
        # The SDK sends the key as x-api-key, as Claude Code does.
        made.append(anthropic.Anthropic(base_url=server.base_url, api_key=key, max_retries=0))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_create_answers_with_a_text_block(server: Server, make_client: MakeAnthropic) -> None:
    msg = make_client(server).messages.create(model=MODEL, max_tokens=40, messages=QUESTION, extra_body=GREEDY)
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    assert [b.type for b in msg.content] == ["text"]
    assert "Paris" in msg.content[0].text  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.output_tokens > 0
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) > 0


def test_system_prompt_stop_sequences_and_max_tokens(server: Server, make_client: MakeAnthropic) -> None:
    client = make_client(server)
    stopped = client.messages.create(
        model=MODEL,
        max_tokens=40,
        system="You answer in one short sentence.",
        messages=QUESTION,
        extra_body=GREEDY,
        stop_sequences=[" Paris"],
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == " Paris"
    assert "Paris" not in stopped.content[0].text  # type: ignore[union-attr]
    capped = client.messages.create(model=MODEL, max_tokens=3, messages=QUESTION, extra_body={"top_k": 1, "top_p": 0.9})
    assert capped.stop_reason == "max_tokens" and capped.usage.output_tokens == 3


def test_stream_events_accumulate_into_the_same_message(server: Server, make_client: MakeAnthropic) -> None:
    client = make_client(server)
    full = client.messages.create(model=MODEL, max_tokens=40, messages=QUESTION, extra_body=GREEDY)
    with client.messages.stream(model=MODEL, max_tokens=40, messages=QUESTION, extra_body=GREEDY) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == full.content[0].text == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == full.usage.output_tokens
    # The raw events, in Anthropic's order.
    raw = client.messages.create(model=MODEL, max_tokens=8, messages=QUESTION, extra_body=GREEDY, stream=True)
    kinds = [event.type for event in raw]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1] == "content_block_start" and kinds[-3] == "content_block_stop"
    assert set(kinds[2:-3]) == {"content_block_delta"}


def test_tool_use_round_trip(server: Server, make_client: MakeAnthropic) -> None:
    client = make_client(server)
    ask: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    choice: Any = {"type": "any", "disable_parallel_tool_use": True}
    msg = client.messages.create(
        model=MODEL, max_tokens=60, messages=ask, tools=[WEATHER], tool_choice=choice, extra_body=GREEDY
    )
    assert msg.stop_reason == "tool_use"
    (call,) = [b for b in msg.content if b.type == "tool_use"]
    assert call.name == "get_weather" and isinstance(call.input, dict) and "city" in call.input
    # The same call streamed: the accumulator rebuilds the input from input_json_delta events.
    with client.messages.stream(
        model=MODEL, max_tokens=60, messages=ask, tools=[WEATHER], tool_choice=choice, extra_body=GREEDY
    ) as stream:
        streamed = stream.get_final_message()
    (streamed_call,) = [b for b in streamed.content if b.type == "tool_use"]
    assert streamed_call.input == call.input and streamed.stop_reason == "tool_use"
    # Feed the result back: the model answers in text, with the tool still offered.
    turns: list[Any] = [
        *ask,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 24 C"}]},
    ]
    answer = client.messages.create(
        model=MODEL,
        max_tokens=40,
        extra_body=GREEDY,
        tools=[WEATHER],
        messages=turns,
        tool_choice={"type": "none"},
    )
    assert answer.stop_reason in {"end_turn", "max_tokens"}
    assert [b.type for b in answer.content] == ["text"] and answer.content[0].text  # type: ignore[union-attr]


def test_count_tokens_matches_the_prompt_of_create(server: Server, make_client: MakeAnthropic) -> None:
    client = make_client(server)
    counted = client.messages.count_tokens(model=MODEL, messages=QUESTION)
    # A fresh system prompt, so nothing of it is in the prefix cache: input_tokens is the whole prompt.
    msg = client.messages.create(model=MODEL, max_tokens=1, messages=QUESTION)
    assert counted.input_tokens == msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0)
    with_tools = client.messages.count_tokens(model=MODEL, messages=QUESTION, tools=[WEATHER])
    assert with_tools.input_tokens > counted.input_tokens


def test_typed_errors_in_anthropic_shape(server: Server, make_client: MakeAnthropic) -> None:
    client = make_client(server)
    with pytest.raises(anthropic.NotFoundError) as not_found:
        client.messages.create(model="claude-unknown", max_tokens=5, messages=QUESTION)
    assert not_found.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": not_found.value.body["error"]["message"]},  # type: ignore[index]
    }
    with pytest.raises(anthropic.BadRequestError) as too_long:
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "word " * 6000}])
    assert too_long.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as no_tokens:
        client.messages.create(model=MODEL, max_tokens=0, messages=QUESTION)
    assert "max_tokens" in no_tokens.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError) as bad_key:
        make_client(server, key="wrong").messages.create(model=MODEL, max_tokens=5, messages=QUESTION)
    assert bad_key.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    # and the server still answers
    assert make_client(server).messages.create(model=MODEL, max_tokens=2, messages=QUESTION).content
