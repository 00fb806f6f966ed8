"""/v1/models, /health, /ready, API keys, request ids and concurrency, on the real model."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from server.settings import Settings
from tests.api.helpers import MODEL, assert_openai_error, chat_body
from tests.conftest import ClientFactory


async def test_models_list_reports_context_and_backend(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/models")
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "list"
    (card,) = body["data"]
    assert card["id"] == MODEL and card["object"] == "model" and card["owned_by"] == "quantserve"
    assert (card["context_length"], card["backend"], card["format"], card["quantization"]) == (
        1024,
        "llama_cpp",
        "gguf",
        "Q4_1",
    )
    one = (await client.get(f"/v1/models/{MODEL}")).json()
    assert one.pop("status")["state"] == card.pop("status")["state"] == "loaded"  # the rest moves (idle time)
    assert one == card


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": [{"model_id": MODEL, "ready": True, "reason": ""}]}


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health", headers={"x-request-id": "abc-123"})).headers["x-request-id"] == "abc-123"
    made = (await client.get("/health", headers={"x-request-id": "bad id\n"})).headers["x-request-id"]
    assert made != "bad id\n" and len(made) == 32


async def test_the_request_id_follows_the_request_into_the_engine(
    app_client: ClientFactory, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    # The in-process engine, so its log lines reach this process's log capture.
    async with app_client(make_settings({"n_ctx": 1024, "engine_process": False})) as client:
        await _follow_request_id(client, caplog)


async def _follow_request_id(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="backends.llama_cpp.scheduler")
    made = await client.post("/v1/chat/completions", json=chat_body(max_tokens=2))
    assert made.json()["id"] == f"chatcmpl-{made.headers['x-request-id']}"
    # A client's own id is kept, with a suffix: two requests may share it, engines key by id.
    given = [
        await client.post(
            "/v1/completions",
            headers={"x-request-id": "trace-42"},
            json={"model": MODEL, "prompt": "Hi", "max_tokens": 2},
        )
        for _ in range(2)
    ]
    ids = [r.json()["id"] for r in given]
    assert all(i.startswith("cmpl-trace-42-") for i in ids) and ids[0] != ids[1]
    assert all(r.headers["x-request-id"] == "trace-42" for r in given)
    finished = [r.getMessage() for r in caplog.records if "finished" in r.getMessage()]
    assert any(ids[0] in line for line in finished), finished


async def test_concurrent_requests_never_corrupt_each_other(client: httpx.AsyncClient) -> None:
    prompts = [
        "Which city is the capital of France?",
        "Name a primary colour.",
        "What is 2 plus 2?",
        "Say hello in Spanish.",
    ]

    def body(prompt: str, stream: bool) -> dict[str, Any]:
        return chat_body(messages=[{"role": "user", "content": prompt}], max_tokens=24, stream=stream)

    solo = [(await client.post("/v1/chat/completions", json=body(p, False))).json() for p in prompts]
    together = await asyncio.gather(
        *(client.post("/v1/chat/completions", json=body(p, i % 2 == 0)) for i, p in enumerate(prompts * 2))
    )
    for i, resp in enumerate(together):
        expected = solo[i % len(prompts)]["choices"][0]["message"]["content"]
        if i % 2 == 0:
            from tests.api.helpers import parse_sse

            events = parse_sse(resp.text)
            text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
        else:
            text = resp.json()["choices"][0]["message"]["content"]
        assert text == expected


async def test_api_keys_guard_v1_routes_only(app_client: ClientFactory, make_settings: Callable[..., Settings]) -> None:
    async with app_client(make_settings(api_keys=("key-one", "key-two"))) as c:
        for method, path, payload in [
            ("POST", "/v1/chat/completions", chat_body(max_tokens=2)),
            ("POST", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 1}),
            ("GET", "/v1/models", None),
        ]:
            missing = await c.request(method, path, json=payload)
            assert "API key" in assert_openai_error(missing, 401, "invalid_api_key")
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = await c.request(method, path, json=payload, headers={"Authorization": "Bearer key-three"})
            assert_openai_error(wrong, 401, "invalid_api_key")
            for key in ("key-one", "key-two"):
                ok = await c.request(method, path, json=payload, headers={"Authorization": f"Bearer {key}"})
                assert ok.status_code == 200, ok.text
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/ready")).status_code == 200
