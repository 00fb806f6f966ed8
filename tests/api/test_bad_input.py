"""Every bad input gets an OpenAI error object with the right status, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.helpers import CAPITAL, MODEL, assert_openai_error, chat_body

CHAT = "/v1/chat/completions"


async def still_serves(client: httpx.AsyncClient) -> None:
    resp = await client.post(CHAT, json=chat_body(max_tokens=8))
    assert resp.status_code == 200
    assert "Paris" in resp.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"model": MODEL}, "messages", "Missing required parameter: 'messages'"),
        ({"messages": CAPITAL}, "model", "Missing required parameter: 'model'"),
        ({"model": MODEL, "messages": []}, "messages", "at least 1 item"),
        ({"model": MODEL, "messages": "hi"}, "messages", "valid list"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role", "'system'"),
        ({"model": MODEL, "messages": [{"content": "x"}]}, "messages.0.role", "Missing required"),
        (chat_body(max_tokens=-1), "max_tokens", "greater than or equal to 1"),
        (chat_body(max_tokens="ten"), "max_tokens", "valid integer"),
        (chat_body(max_tokens=10**9), "max_tokens", "less than or equal to"),
        (chat_body(temperature=5), "temperature", "less than or equal to 2"),
        (chat_body(top_p=0), "top_p", "greater than 0"),
        (chat_body(top_k=-5), "top_k", "greater than or equal to -1"),
        (chat_body(min_p=2), "min_p", "less than or equal to 1"),
        (chat_body(repeat_penalty=0), "repeat_penalty", "greater than 0"),
        (chat_body(presence_penalty=3), "presence_penalty", "less than or equal to 2"),
        (chat_body(frequency_penalty=-3), "frequency_penalty", "greater than or equal to -2"),
        (chat_body(seed="lucky"), "seed", "valid integer"),
        (chat_body(ignore_eos="sometimes"), "ignore_eos", "valid boolean"),
        (chat_body(ignore_eos=[True]), "ignore_eos", "valid boolean"),
        (chat_body(stop=5), "stop", "valid string"),
        (chat_body(stream_options={"include_usage": "maybe"}, stream=True), "stream_options.include_usage", "boolean"),
        (chat_body(stop=["a"] * 17), "stop", "at most 16"),
        (chat_body(stream_options={"include_usage": True}), None, "only allowed when stream is true"),
        (chat_body(frobnicate=True), "frobnicate", "Unrecognized request argument supplied: frobnicate"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            None,
            "messages.0.content",
        ),
    ],
)
async def test_invalid_fields_are_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], param: str | None, needle: str
) -> None:
    resp = await client.post(CHAT, json=body)
    message = assert_openai_error(resp, 400, "invalid_value", param)
    assert needle in message
    await still_serves(client)


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        CHAT, content=b'{"model": "x", "messages": [', headers={"content-type": "application/json"}
    )
    assert_openai_error(resp, 400, "invalid_json")
    await still_serves(client)


async def test_non_object_json(client: httpx.AsyncClient) -> None:
    resp = await client.post(CHAT, json=[1, 2, 3])
    assert_openai_error(resp, 400, "invalid_value")


async def test_unknown_model_is_404_never_a_silent_default(client: httpx.AsyncClient) -> None:
    resp = await client.post(CHAT, json={**chat_body(), "model": "gpt-4o"})
    message = assert_openai_error(resp, 404, "model_not_found", "model")
    assert "gpt-4o" in message and MODEL in message
    assert_openai_error(await client.get("/v1/models/gpt-4o"), 404, "model_not_found")
    await still_serves(client)


async def test_prompt_longer_than_the_context_is_refused_before_generation(client: httpx.AsyncClient) -> None:
    long = [{"role": "user", "content": "Paris is lovely. " * 400}]  # ~2000 tokens > n_ctx 1024
    resp = await client.post(CHAT, json=chat_body(messages=long, stream=True))
    message = assert_openai_error(resp, 400, "context_length_exceeded", "messages")
    assert "maximum context length is 1024 tokens" in message
    await still_serves(client)


async def test_prompt_plus_max_tokens_over_the_context(client: httpx.AsyncClient) -> None:
    resp = await client.post(CHAT, json=chat_body(max_tokens=1020))
    message = assert_openai_error(resp, 400, "context_length_exceeded", "max_tokens")
    assert "1020 in the completion" in message


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        # the tool schema must be an object schema, and a valid JSON schema
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"logprobs": True, "top_logprobs": 50}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
         "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"100": 101}}, "logit_bias"),
        ({"logit_bias": {"999999": 5}}, "logit_bias"),
    ],
)  # fmt: skip
async def test_bad_values_of_the_new_fields_name_the_field(
    client: httpx.AsyncClient, fields: dict[str, Any], param: str
) -> None:
    resp = await client.post(CHAT, json=chat_body(**fields))
    assert_openai_error(resp, 400, "invalid_value", None)
    assert resp.json()["error"]["param"].split(".")[0] == param
    await still_serves(client)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
    ],
)
async def test_unimplemented_fields_are_refused_not_ignored(
    client: httpx.AsyncClient, fields: dict[str, Any], param: str
) -> None:
    resp = await client.post(CHAT, json=chat_body(**fields))
    assert param in assert_openai_error(resp, 400, "unsupported_parameter", param)
    await still_serves(client)


async def test_completions_bad_input(client: httpx.AsyncClient) -> None:
    url = "/v1/completions"
    resp = await client.post(url, json={"model": MODEL, "prompt": "x", "echo": True, "logprobs": 1})
    assert_openai_error(resp, 400, "unsupported_parameter", "echo")
    # SmolLM2's GGUF defines no fill-in-the-middle tokens, so a suffix cannot be honoured.
    resp = await client.post(url, json={"model": MODEL, "prompt": "def f(", "suffix": "return x"})
    assert "fill-in-the-middle" in assert_openai_error(resp, 400, "unsupported_parameter", "suffix")
    resp = await client.post(url, json={"model": MODEL, "prompt": "x", "logprobs": 6})
    assert_openai_error(resp, 400, "invalid_value", "logprobs")
    resp = await client.post(url, json={"model": MODEL, "prompt": ""})
    assert_openai_error(resp, 400, "invalid_value", "prompt")
    resp = await client.post(url, json={"model": MODEL})
    assert_openai_error(resp, 400, "invalid_value", "prompt")
    await still_serves(client)


async def test_unknown_route_and_wrong_method_are_openai_shaped(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/v1/nothing"), 404, "not_found")
    assert_openai_error(await client.get(CHAT), 405, "method_not_allowed")


async def test_more_choices_than_the_server_generates_is_a_400(client: httpx.AsyncClient) -> None:
    resp = await client.post(CHAT, json=chat_body(n=17, max_tokens=1))
    assert "at most 16" in assert_openai_error(resp, 400, "invalid_value", "n")
    body = {"model": MODEL, "prompt": ["a", "b", "c"], "n": 6, "max_tokens": 1}
    assert "18 choices" in assert_openai_error(
        await client.post("/v1/completions", json=body), 400, "invalid_value", "n"
    )
    await still_serves(client)


async def test_bad_completion_prompt_shapes_name_the_prompt(client: httpx.AsyncClient) -> None:
    url = "/v1/completions"
    for prompt in ([1, 999999], [[5], [-1]], [], ["x"] * 65):
        resp = await client.post(url, json={"model": MODEL, "prompt": prompt, "max_tokens": 1})
        assert_openai_error(resp, 400, "invalid_value", "prompt")
    await still_serves(client)
