"""/v1/messages and /v1/responses in process: every bad field gets that API's own error shape and
status (and the server keeps serving), the metrics carry each endpoint's label, and the store is
bounded."""

from __future__ import annotations

from typing import Any

import pytest

from backends.types import Message
from server.http.errors import NotFound
from server.responses_api.store import ResponseStore, StoredResponse
from tests.api.helpers import CAPITAL, MODEL, assert_openai_error
from tests.conftest import AppClient, ClientFactory

TOOL = {"name": "f", "input_schema": {"type": "object"}}


def msg_body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 4, "messages": CAPITAL, "temperature": 0, **fields}


def resp_body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": "Which city is the capital of France?", "max_output_tokens": 4, **fields}


def assert_anthropic_error(resp: Any, status: int, type_: str, needle: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body == {"type": "error", "error": {"type": type_, "message": body["error"]["message"]}}
    assert needle in body["error"]["message"], body


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": MODEL, "messages": CAPITAL}, "max_tokens"),
        (msg_body(max_tokens=0), "max_tokens"),
        (msg_body(messages=[]), "messages"),
        (msg_body(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
        (msg_body(messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}]), "messages.0.content"),
        (msg_body(temperature=1.5), "temperature"),
        (msg_body(top_k=-1), "top_k"),
        (msg_body(stop_sequences=[""]), "stop_sequences"),
        (msg_body(tools=[{"name": "f", "input_schema": {"type": "string"}}]), "input_schema"),
        (msg_body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0"),
        (msg_body(tool_choice={"type": "any"}), "tool_choice"),
        (msg_body(tools=[TOOL], tool_choice={"type": "tool", "name": "g"}), "tool_choice"),
        (msg_body(thinking={"type": "sometimes"}), "thinking"),
        (msg_body(messages=[{"role": "user", "content": [{"type": "thinking", "thinking": "x"}]}]), "thinking"),
        (msg_body(messages=[*CAPITAL, {"role": "assistant", "content": "The"}]), "prefill"),
        (
            msg_body(messages=[{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "x"}]}]),
            "tool_result",
        ),
        (msg_body(frobnicate=1), "frobnicate"),
    ],
)
async def test_messages_bad_fields_are_anthropic_400s(client: AppClient, body: dict[str, Any], needle: str) -> None:
    assert_anthropic_error(await client.post("/v1/messages", json=body), 400, "invalid_request_error", needle)
    ok = await client.post("/v1/messages", json=msg_body())
    assert ok.status_code == 200 and ok.json()["content"]


async def test_messages_other_errors_in_anthropic_shape(client: AppClient) -> None:
    missing = await client.post("/v1/messages", json=msg_body(model="claude-x"))
    assert_anthropic_error(missing, 404, "not_found_error", "claude-x")
    unknown = await client.get("/v1/messages/nothing-here")
    assert_anthropic_error(unknown, 404, "not_found_error", "Not Found")
    bad_json = await client.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
    assert_anthropic_error(bad_json, 400, "invalid_request_error", "JSON")
    count = await client.post("/v1/messages/count_tokens", json={"model": MODEL})
    assert_anthropic_error(count, 400, "invalid_request_error", "messages")
    # the OpenAI routes keep OpenAI's shape
    assert_openai_error(await client.post("/v1/chat/completions", json={"model": MODEL}), 400, "invalid_value")


async def test_auth_accepts_x_api_key_and_bearer(app_client: ClientFactory, make_settings: Any) -> None:
    async with app_client(make_settings(api_keys=("sk-a",))) as c:
        body = msg_body(max_tokens=1)
        assert (await c.post("/v1/messages", json=body, headers={"x-api-key": "sk-a"})).status_code == 200
        assert (await c.post("/v1/messages", json=body, headers={"authorization": "Bearer sk-a"})).status_code == 200
        wrong = await c.post("/v1/messages", json=body, headers={"x-api-key": "sk-b"})
        assert_anthropic_error(wrong, 401, "authentication_error", "Incorrect API key")
        none = await c.post("/v1/responses", json=resp_body())
        assert_openai_error(none, 401, "invalid_api_key")


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": MODEL}, "input", "invalid_value"),
        (resp_body(max_output_tokens=0), "max_output_tokens", "invalid_value"),
        (resp_body(temperature=3), "temperature", "invalid_value"),
        (resp_body(input=[{"type": "message", "role": "wizard", "content": "x"}]), None, "invalid_value"),
        (resp_body(input=[{"type": "function_call_output", "output": "x"}]), None, "invalid_value"),
        (resp_body(tools=[{"type": "web_search"}]), None, "invalid_value"),
        (resp_body(tool_choice="required"), "tool_choice", "invalid_value"),
        (
            resp_body(tools=[{"type": "function", "name": "f"}], tool_choice={"type": "function", "name": "g"}),
            "tool_choice",
            "invalid_value",
        ),
        (
            resp_body(text={"format": {"type": "json_schema", "name": "x", "schema": {"type": 5}}}),
            None,
            "invalid_value",
        ),
        (resp_body(reasoning={"effort": "extreme"}), "reasoning.effort", "invalid_value"),
        (resp_body(include=["message.output_text.logprobs"]), "include", "unsupported_parameter"),
        (resp_body(background=True), "background", "unsupported_parameter"),
        (resp_body(truncation="auto"), "truncation", "unsupported_parameter"),
        (resp_body(frobnicate=1), "frobnicate", "invalid_value"),
    ],
)
async def test_responses_bad_fields_are_openai_400s(
    client: AppClient, body: dict[str, Any], param: str | None, code: str
) -> None:
    assert_openai_error(await client.post("/v1/responses", json=body), 400, code, param)
    ok = await client.post("/v1/responses", json=resp_body())
    assert ok.status_code == 200 and ok.json()["output"]


async def test_unknown_response_ids_are_openai_404s(client: AppClient) -> None:
    for resp in (
        await client.get("/v1/responses/resp_nope"),
        await client.delete("/v1/responses/resp_nope"),
        await client.post("/v1/responses", json=resp_body(previous_response_id="resp_nope")),
    ):
        assert_openai_error(resp, 404, "not_found", "response_id")


async def test_metrics_carry_the_endpoint(client: AppClient) -> None:
    metrics = client.app.state.metrics

    def count(endpoint: str) -> float:
        labels = {
            "model": MODEL,
            "backend": "llama_cpp",
            "endpoint": endpoint,
            "status": "ok",
            "finish_reason": "length",
        }
        return metrics.registry.get_sample_value("quantserve_requests_total", labels) or 0.0

    before = {e: count(e) for e in ("messages", "responses")}
    assert (await client.post("/v1/messages", json=msg_body(max_tokens=2))).status_code == 200
    assert (await client.post("/v1/messages", json=msg_body(max_tokens=2, stream=True))).status_code == 200
    assert (await client.post("/v1/responses", json=resp_body(max_output_tokens=2, stream=True))).status_code == 200
    assert count("messages") - before["messages"] == 2
    assert count("responses") - before["responses"] == 1


def _stored(size: int) -> StoredResponse:
    return StoredResponse({"id": "x"}, (Message("user", "a" * size),), size)


def test_store_is_lru_bounded_by_count_and_bytes() -> None:
    store = ResponseStore(max_entries=2, max_bytes=100)
    store.put("a", _stored(10))
    store.put("b", _stored(10))
    store.get("a")  # a is now the most recently used
    store.put("c", _stored(10))
    with pytest.raises(NotFound):
        store.get("b")
    assert len(store) == 2 and store.bytes == 20
    store.put("d", _stored(95))  # over the byte bound: everything older goes
    assert len(store) == 1 and store.bytes == 95
    store.put("e", _stored(101))  # larger than the whole store: not kept, nothing evicted for it
    assert len(store) == 1
    with pytest.raises(NotFound):
        store.get("e")
    store.delete("d")
    assert len(store) == 0 and store.bytes == 0
