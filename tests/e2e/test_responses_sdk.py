"""The official openai SDK's Responses API against a real server process.

Only SDK calls: its own models, its stream accumulator and its parse helper must accept every
response and stream.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import openai
import pytest
from pydantic import BaseModel

from tests.e2e.conftest import MakeClient, Server
from tests.e2e.test_openai_sdk import MODEL

QUESTION = "Which city is the capital of France?"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_create_and_previous_response_id(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    first = client.responses.create(
        model=MODEL, input=QUESTION, instructions="Answer briefly.", temperature=0, max_output_tokens=40
    )
    assert first.status == "completed" and "Paris" in first.output_text
    assert first.usage is not None and first.usage.output_tokens > 0
    # The server keeps the conversation: the follow-up sends only the new turn.
    second = client.responses.create(
        model=MODEL, input="And of Germany?", previous_response_id=first.id, temperature=0, max_output_tokens=40
    )
    assert second.output_text and second.previous_response_id == first.id
    # The whole first turn (its prompt and its answer) is in the second prompt, before the new turn.
    # (What a 135M model answers about Germany is not the server's to promise: greedy, it says Bremen.)
    assert second.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert client.responses.retrieve(first.id).output_text == first.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="Hi", previous_response_id=first.id)
    unstored = client.responses.create(model=MODEL, input=QUESTION, store=False, max_output_tokens=4)
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.retrieve(unstored.id)
    assert gone.value.code == "not_found"


def test_max_output_tokens_makes_it_incomplete(server: Server, make_client: MakeClient) -> None:
    resp = make_client(server).responses.create(model=MODEL, input=QUESTION, max_output_tokens=3)
    assert resp.status == "incomplete" and resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage is not None and resp.usage.output_tokens == 3


def test_stream_accumulates_into_the_same_response(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    full = client.responses.create(model=MODEL, input=QUESTION, temperature=0, max_output_tokens=40)
    with client.responses.stream(model=MODEL, input=QUESTION, temperature=0, max_output_tokens=40) as stream:
        kinds = []
        deltas = []
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == full.output_text
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_function_call_round_trip(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    ask: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    once: Any = {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False, "max_output_tokens": 60}
    resp = client.responses.create(model=MODEL, input=ask, temperature=0, **once)
    (call,) = [item for item in resp.output if item.type == "function_call"]
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)
    with client.responses.stream(model=MODEL, input=ask, temperature=0, **once) as stream:
        streamed = stream.get_final_response()
    (streamed_call,) = [item for item in streamed.output if item.type == "function_call"]
    assert streamed_call.arguments == call.arguments
    # The output fed back (stateless), then continued from the stored response (stateful).
    output: Any = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 C"}
    turns: Any = [*ask, call.model_dump(exclude_none=True), output]
    answer = client.responses.create(
        model=MODEL, input=turns, tools=[WEATHER], tool_choice="none", max_output_tokens=40
    )
    assert answer.output_text
    chained = client.responses.create(
        model=MODEL,
        previous_response_id=resp.id,
        input=[output],
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=40,
    )
    assert chained.output_text


class Capital(BaseModel):
    # A closed set: a free-form string lets a 135M model run on inside the quotes to the token budget.
    city: Literal["Paris", "Berlin", "Madrid", "Rome"]


def test_parse_with_a_pydantic_model(server: Server, make_client: MakeClient) -> None:
    parsed = make_client(server).responses.parse(
        model=MODEL, input=QUESTION, text_format=Capital, temperature=0, max_output_tokens=100
    )
    assert isinstance(parsed.output_parsed, Capital)
    assert parsed.output_parsed.city == "Paris"


def test_errors_are_openai_shaped(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.responses.create(model=MODEL, input=QUESTION, background=True)
    assert unsupported.value.code == "unsupported_parameter" and unsupported.value.param == "background"
    with pytest.raises(openai.BadRequestError) as hosted:
        client.responses.create(model=MODEL, input=QUESTION, tools=[{"type": "web_search"}])
    assert hosted.value.param is not None and hosted.value.param.startswith("tools")
    assert client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=2).output
