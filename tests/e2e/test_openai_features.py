"""Tools, structured output, logprobs, n, seed and logit_bias through the official openai SDK,
against the real server on the real SmolLM2 model; every output is validated, not just its status."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.e2e.conftest import MakeClient, Server
from tests.e2e.test_openai_sdk import MODEL, QUESTION

WEATHER_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER_PARAMS},
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current local time in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
]
WEATHER_Q: list[Any] = [{"role": "user", "content": "What is the weather in Paris right now?"}]


def _schema_of(name: str) -> dict[str, Any]:
    return next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)


def _check_calls(calls: list[Any] | None) -> list[Any]:
    assert calls, "expected tool calls"
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), _schema_of(call.function.name))
    assert len({c.id for c in calls}) == len(calls)
    return calls


def test_tool_choice_required_gives_valid_calls(server: Server, make_client: MakeClient) -> None:
    resp = make_client(server).chat.completions.create(
        model=MODEL, messages=WEATHER_Q, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=120
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    _check_calls(choice.message.tool_calls)
    assert choice.message.content is None


def test_named_tool_choice_forces_that_function_once(server: Server, make_client: MakeClient) -> None:
    resp = make_client(server).chat.completions.create(
        model=MODEL,
        messages=WEATHER_Q,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0,
        max_tokens=120,
    )
    calls = _check_calls(resp.choices[0].message.tool_calls)
    assert [c.function.name for c in calls] == ["get_time"]


def test_tool_choice_none_and_auto_answer_validly(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    none = client.chat.completions.create(
        model=MODEL, messages=QUESTION, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=40
    )
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].message.content and "<tool_call>" not in none.choices[0].message.content
    # "none": the model is not shown the tools at all, so the prompt is the plain question's.
    plain = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=1)
    assert none.usage is not None and plain.usage is not None
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens
    # "auto": the model decides; whatever it decides must be well-formed.
    auto = client.chat.completions.create(model=MODEL, messages=WEATHER_Q, tools=TOOLS, temperature=0, max_tokens=120)
    message = auto.choices[0].message
    if message.tool_calls:
        assert auto.choices[0].finish_reason == "tool_calls"
        _check_calls(message.tool_calls)
    else:
        assert message.content and "<tool_call>" not in message.content


def test_streamed_tool_calls_accumulate_with_the_sdk_helper(server: Server, make_client: MakeClient) -> None:
    class GetWeather(BaseModel):
        city: str
        unit: str

    client = make_client(server)
    deltas: list[str] = []
    with client.chat.completions.stream(
        model=MODEL,
        messages=WEATHER_Q,
        tools=[openai.pydantic_function_tool(GetWeather, name="get_weather")],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=120,
    ) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                deltas.append(event.arguments_delta)
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert "".join(deltas) == calls[0].function.arguments
    parsed = calls[0].function.parsed_arguments
    assert isinstance(parsed, GetWeather) and parsed.city


def test_tool_result_round_trip(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    first = client.chat.completions.create(
        model=MODEL, messages=WEATHER_Q, tools=TOOLS[:1], tool_choice="required", temperature=0, max_tokens=120
    )
    call = _check_calls(first.choices[0].message.tool_calls)[0]
    history: list[Any] = [
        *WEATHER_Q,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 31, "sky": "sunny"})},
    ]
    second = client.chat.completions.create(
        model=MODEL, messages=history, tools=TOOLS[:1], tool_choice="none", temperature=0, max_tokens=60
    )
    assert second.choices[0].finish_reason in {"stop", "length"}
    assert second.choices[0].message.content
    # the call and its result reached the prompt: longer than the bare question's by at least both
    plain = client.chat.completions.create(model=MODEL, messages=WEATHER_Q, temperature=0, max_tokens=1)
    assert second.usage is not None and plain.usage is not None
    assert second.usage.prompt_tokens > plain.usage.prompt_tokens + 20


def test_parse_with_a_pydantic_model(server: Server, make_client: MakeClient) -> None:
    class City(BaseModel):
        name: str
        country: str
        population_millions: float

    resp = make_client(server).chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Paris as JSON with its name, country and population."}],
        response_format=City,
        temperature=0,
        max_tokens=80,
    )
    parsed = resp.choices[0].message.parsed
    assert isinstance(parsed, City) and parsed.name


def test_json_object_output_parses(server: Server, make_client: MakeClient) -> None:
    resp = make_client(server).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "List three colours in a JSON object."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=80,
    )
    assert resp.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(resp.choices[0].message.content or ""), dict)


def test_chat_logprobs(server: Server, make_client: MakeClient) -> None:
    resp = make_client(server).chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=12, logprobs=True, top_logprobs=3
    )
    choice = resp.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    entries = choice.logprobs.content
    assert resp.usage is not None and len(entries) == resp.usage.completion_tokens
    assert "".join(e.token for e in entries) == choice.message.content
    for e in entries:
        assert e.logprob <= 0 and e.bytes == list(e.token.encode())
        tops = [t.logprob for t in e.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        # greedy: the sampled token is a most likely one (ties may list the other first)
        assert math.isclose(e.top_logprobs[0].logprob, e.logprob)
        assert e.token in {t.token for t in e.top_logprobs if math.isclose(t.logprob, e.logprob)}
        assert sum(math.exp(t) for t in tops) <= 1.0 + 1e-6


def test_completion_logprobs_and_echo(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    prompt = "The capital of France is"
    resp = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=4, logprobs=2)
    lp = resp.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    assert "".join(lp.tokens) == resp.choices[0].text
    assert lp.text_offset[0] == 0 and all(len(t) == 2 for t in lp.top_logprobs)
    echoed = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=4, echo=True)
    assert echoed.choices[0].text == prompt + resp.choices[0].text


def test_batched_and_token_id_prompts(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    prompts = ["The capital of France is", "Two plus two equals"]
    batch = client.completions.create(model=MODEL, prompt=prompts, temperature=0, max_tokens=4, n=2)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]  # prompt * n + j, as OpenAI numbers them
    singles = [client.completions.create(model=MODEL, prompt=p, temperature=0, max_tokens=4) for p in prompts]
    assert batch.usage is not None
    assert batch.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles if s.usage)
    ids = _token_ids(server, prompts[0])
    by_ids = client.completions.create(model=MODEL, prompt=ids, temperature=0, max_tokens=4, echo=True)
    assert by_ids.choices[0].text.startswith(prompts[0])  # echo decodes the token ids
    assert by_ids.usage is not None and by_ids.usage.prompt_tokens == len(ids)


def test_n_choices_non_streamed_and_streamed(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    resp = client.chat.completions.create(model=MODEL, messages=QUESTION, n=3, temperature=0.9, max_tokens=16, seed=7)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert all(c.message.content for c in resp.choices)
    assert resp.usage is not None and resp.usage.completion_tokens <= 3 * 16
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        n=2,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = {0: "", 1: ""}
    finishes: dict[int, list[str]] = {0: [], 1: []}
    usage = None
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finishes[c.index].append(c.finish_reason)
        usage = chunk.usage or usage
    assert all(len(f) == 1 for f in finishes.values())
    assert texts[0] and texts[1]
    # (Greedy choices are usually equal, but not guaranteed to be: one may reuse cached prompt
    # KV computed in a different batch shape, which rounds differently, as in llama-server.)
    assert usage is not None and 2 <= usage.completion_tokens <= 2 * 16


def test_seed_reproduces_sampled_output(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)

    def sample(seed: int) -> str:
        resp = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=1.0, max_tokens=24, seed=seed)
        return resp.choices[0].message.content or ""

    first = sample(1234)
    assert sample(1234) == first
    assert any(sample(s) != first for s in (1, 2, 3))


def test_logit_bias_bans_and_forces_tokens(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    prompt = "The capital of France is"
    base = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=1, logprobs=0)
    assert base.choices[0].logprobs is not None and base.choices[0].logprobs.tokens
    first = base.choices[0].logprobs.tokens[0]
    (first_id,) = _token_ids(server, first)
    banned = client.completions.create(
        model=MODEL, prompt=prompt, temperature=0, max_tokens=1, logprobs=0, logit_bias={str(first_id): -100}
    )
    assert banned.choices[0].logprobs is not None
    assert banned.choices[0].logprobs.tokens != [first]
    (bang,) = _token_ids(server, "!")
    forced = client.completions.create(
        model=MODEL, prompt=prompt, temperature=0, max_tokens=3, logit_bias={str(bang): 100}
    )
    assert forced.choices[0].text == "!!!"


def test_ignore_eos_runs_to_max_tokens_as_benchmarks_send_it(server: Server, make_client: MakeClient) -> None:
    """vLLM's and llama-server's ``ignore_eos`` (benchmark clients send it for equal-length
    outputs): the answer goes on to max_tokens, streamed or not; a JSON constraint still ends it."""
    client = make_client(server)
    hi: list[Any] = [{"role": "user", "content": "Say hi."}]
    short = client.chat.completions.create(model=MODEL, messages=hi, temperature=0, max_tokens=40)
    assert short.choices[0].finish_reason == "stop" and short.usage is not None
    assert short.usage.completion_tokens < 40, "the premise: this answer ends by itself"
    stream = client.chat.completions.create(
        model=MODEL,
        messages=hi,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    events = list(stream)
    assert [c.choices[0].finish_reason for c in events if c.choices][-1] == "length"
    assert events[-1].usage is not None and events[-1].usage.completion_tokens == 40
    text = client.completions.create(
        model=MODEL, prompt="Hi.", temperature=0, max_tokens=30, extra_body={"ignore_eos": True}
    )
    assert text.choices[0].finish_reason == "length"
    assert text.usage is not None and text.usage.completion_tokens == 30
    as_json = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "List three colours in a JSON object."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=80,
        extra_body={"ignore_eos": True},
    )
    assert as_json.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(as_json.choices[0].message.content or ""), dict)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=hi, extra_body={"ignore_eos": "sometimes"})
    assert err.value.param == "ignore_eos"


def _token_ids(server: Server, text: str) -> list[int]:
    resp = httpx.post(
        f"{server.base_url}/tokenize",
        json={"model": MODEL, "prompt": text, "add_special_tokens": False},
        headers={"Authorization": "Bearer sk-test"},
    )
    assert resp.status_code == 200, resp.text
    return list(resp.json()["tokens"])


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}, "tools"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"n": 0}, "n"),
        ({"logprobs": True, "top_logprobs": 50}, "top_logprobs"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}},
            "response_format",
        ),
    ],
)
def test_sdk_bad_input_names_the_field(
    server: Server, fields: dict[str, Any], param: str, make_client: MakeClient
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        make_client(server).chat.completions.create(model=MODEL, messages=QUESTION, **fields)
    assert err.value.status_code == 400
    assert str(err.value.param).split(".")[0] == param
