"""Limits, timeouts, API keys on every route and CORS, on the real model (a fake engine only
where a fixed pace is needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from backends.errors import ConfigError
from server.http.app import create_app
from server.runtime.pool import ModelLimits, ModelPool
from server.settings import ModelConfig, Settings
from tests.api.helpers import MODEL, assert_openai_error, chat_body, parse_sse
from tests.conftest import ClientFactory
from tests.fakes import CrashingBackend

LONG = [{"role": "user", "content": "Count from 1 to 500, one number per line."}]
# Greedy, this prompt runs to any max_tokens (measured: 2000 tokens, finish "length").
ANIMALS = [{"role": "user", "content": "List 300 different animals, one per line."}]


def limited(model_path: Path, make_settings: Callable[..., Settings], **model_fields: object) -> Settings:
    model = ModelConfig(id=MODEL, path=model_path, options={"n_ctx": 1024}, **model_fields)  # type: ignore[arg-type]
    return make_settings(models=(model,))


async def test_body_over_the_limit_is_413_before_parsing(
    app_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    async with app_client(make_settings(max_body_bytes=2048)) as c:
        big = chat_body(messages=[{"role": "user", "content": "x" * 5000}])
        assert_openai_error(await c.post("/v1/chat/completions", json=big), 413, "request_too_large")

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams in
            yield b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}]}'

        resp = await c.post("/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
        assert_openai_error(resp, 413, "request_too_large")
        ok = await c.post("/v1/chat/completions", json=chat_body(max_tokens=8))
        assert "Paris" in ok.json()["choices"][0]["message"]["content"]


async def test_too_many_messages(app_client: ClientFactory, make_settings: Callable[..., Settings]) -> None:
    async with app_client(make_settings(max_messages=3)) as c:
        msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}] * 2
        message = assert_openai_error(
            await c.post("/v1/chat/completions", json=chat_body(messages=msgs)), 400, "invalid_value", "messages"
        )
        assert "at most 3" in message


async def test_per_model_token_limits(
    app_client: ClientFactory, make_settings: Callable[..., Settings], model_path: Path
) -> None:
    async with app_client(limited(model_path, make_settings, max_tokens=5, max_prompt_tokens=60)) as c:
        over = await c.post("/v1/chat/completions", json=chat_body(max_tokens=6))
        assert "at most 5" in assert_openai_error(over, 400, "invalid_value", "max_tokens")
        capped = (await c.post("/v1/chat/completions", json=chat_body(messages=LONG))).json()
        assert (capped["choices"][0]["finish_reason"], capped["usage"]["completion_tokens"]) == ("length", 5)
        long_prompt = [{"role": "user", "content": "Paris " * 80}]
        resp = await c.post("/v1/chat/completions", json=chat_body(messages=long_prompt))
        assert "at most 60 prompt tokens" in assert_openai_error(resp, 400, "context_length_exceeded", "messages")
        resp = await c.post("/v1/completions", json={"model": MODEL, "prompt": "x " * 100})
        assert_openai_error(resp, 400, "context_length_exceeded", "prompt")


async def test_request_timeout_before_the_first_token_is_504_and_frees_the_engine(
    app_client: ClientFactory, make_settings: Callable[..., Settings], model_path: Path
) -> None:
    async with app_client(limited(model_path, make_settings, request_timeout_s=0.001)) as c:
        resp = await c.post("/v1/chat/completions", json=chat_body(messages=LONG, max_tokens=400))
        assert "0.001 s limit" in assert_openai_error(resp, 504, "timeout")
        backend = c.app.state.pool.get(MODEL)  # type: ignore[attr-defined]
        for _ in range(3000):  # the engine lets the request go at its next step
            if backend.stats().running == backend.stats().waiting == 0:
                break
            await asyncio.sleep(0.01)
        assert backend.stats().running == backend.stats().waiting == 0


async def test_request_timeout_after_the_first_token_is_an_in_stream_error(
    make_settings: Callable[..., Settings],
) -> None:
    # A fake engine at a fixed 10 ms a token: how long a real one takes to its first token
    # depends on the machine's load, so with it the limit could fall before the 200.
    slow = CrashingBackend("slow", step_s=0.01)
    pool = ModelPool({"slow": slow}, {"slow": ModelLimits(request_timeout_s=1.0)})
    await pool.start_all()
    app = create_app(make_settings(), pool)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as c:
            body = chat_body(model="slow", max_tokens=10_000, stream=True)
            resp = await c.post("/v1/chat/completions", json=body)
            assert resp.status_code == 200
            events = parse_sse(resp.text)
            assert events[-1] == "[DONE]"
            assert events[-2]["error"]["code"] == "timeout"
            assert events[-2]["error"]["type"] == "server_error"
            assert "1 s limit" in events[-2]["error"]["message"]
            deltas = [e for e in events[:-2] if e["choices"] and e["choices"][0]["delta"].get("content")]
            assert 0 < len(deltas) < 10_000  # cut mid-stream
            assert slow.running == 0  # the engine stream was closed


async def test_keys_guard_every_route_but_the_open_ones(
    app_client: ClientFactory, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# one key per line\nkey-from-file\n\n")
    async with app_client(make_settings(api_keys=("key-one",), api_keys_file=key_file)) as c:
        for path in ["/v1/models", "/metrics", "/docs", "/openapi.json", "/v1/unknown"]:
            assert_openai_error(await c.get(path), 401, "invalid_api_key")
            for key in ("key-one", "key-from-file"):
                resp = await c.get(path, headers={"Authorization": f"Bearer {key}"})
                assert resp.status_code != 401, path
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/ready")).status_code == 200


async def test_cors_is_off_by_default_and_configurable(
    app_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    preflight = {"Origin": "http://app.local", "Access-Control-Request-Method": "POST"}
    async with app_client() as c:
        resp = await c.options("/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in resp.headers
    async with app_client(make_settings(cors_origins=("http://app.local",), api_keys=("k",))) as c:
        resp = await c.options("/v1/chat/completions", headers=preflight)
        assert resp.status_code == 200
        assert resp.headers["access-control-allow-origin"] == "http://app.local"
        denied = await c.get("/v1/models", headers={"Origin": "http://app.local"})
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == "http://app.local"


async def test_queue_timeout_fails_a_waiting_request_and_spares_the_running_one(
    app_client: ClientFactory, make_settings: Callable[..., Settings], model_path: Path
) -> None:
    # One thread: on a CPU shared with other work, two threads spin-waiting on each other's
    # OpenMP barriers slowed a 900-token answer past the 600 s request limit.
    one_slot = ModelConfig(id=MODEL, path=model_path, options={"n_ctx": 1024, "parallel": 1, "n_threads": 1})
    settings = make_settings(models=(one_slot,), queue_timeout_s=0.3, request_timeout_s=3600)
    async with app_client(settings) as c:
        backend = c.app.state.pool.get(MODEL)  # type: ignore[attr-defined]
        running = asyncio.ensure_future(
            c.post("/v1/chat/completions", json=chat_body(messages=ANIMALS, max_tokens=600))
        )
        for _ in range(6000):  # until the long request holds the only slot
            if backend.stats().running == 1:
                break
            await asyncio.sleep(0.01)
        assert backend.stats().running == 1
        waiters = [
            ("/v1/chat/completions", chat_body(max_tokens=4)),
            ("/v1/chat/completions", chat_body(max_tokens=4, stream=True)),
            ("/v1/completions", {"model": MODEL, "prompt": "Paris is", "max_tokens": 4}),
        ]
        for path, body in waiters:
            waited = await c.post(path, json=body)
            message = assert_openai_error(waited, 503, "queue_timeout")
            assert "0.3 s" in message and "queue_timeout_s" in message
            assert int(waited.headers["retry-after"]) >= 1
            assert backend.stats().waiting == 0, "the timed-out request left the queue"
        assert not running.done(), "the running request outlived three queue timeouts"
        done = await running
        assert done.status_code == 200, done.text
        body = done.json()
        # Generating for longer than the queue timeout did not touch the request that had the slot.
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 600
        ok = await c.post("/v1/chat/completions", json=chat_body(max_tokens=8))
        assert ok.status_code == 200, ok.text
        assert "Paris" in ok.json()["choices"][0]["message"]["content"]


def test_queue_timeout_a_models_own_overrides_the_global_one(
    make_settings: Callable[..., Settings], model_path: Path
) -> None:
    own = ModelConfig(id="own", path=model_path, queue_timeout_s=2.5)
    inherited = ModelConfig(id="inherited", path=model_path)
    pool = ModelPool.from_settings(make_settings(models=(own, inherited), queue_timeout_s=7.0))
    assert pool.limits("own").queue_timeout_s == 2.5
    assert pool.limits("inherited").queue_timeout_s == 7.0
    assert ModelPool.from_settings(make_settings()).limits(MODEL).queue_timeout_s is None


def test_queue_timeout_is_refused_on_a_vllm_model_and_skipped_globally(
    make_settings: Callable[..., Settings], model_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # vLLM's scheduler owns its queue: a model-level queue timeout there would be silently ignored.
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    vllm = {"id": "v", "path": checkpoint, "format": "safetensors", "backend": "vllm"}
    with pytest.raises(ConfigError, match="queue_timeout_s is not supported on the vllm backend"):
        ModelPool.from_settings(make_settings(models=(ModelConfig(**vllm, queue_timeout_s=1.0),)))
    gguf = ModelConfig(id=MODEL, path=model_path)
    pool = ModelPool.from_settings(make_settings(models=(gguf, ModelConfig(**vllm)), queue_timeout_s=3.0))
    assert pool.limits(MODEL).queue_timeout_s == 3.0
    assert pool.limits("v").queue_timeout_s is None
    assert "model v (vllm): queue_timeout_s does not apply" in caplog.text
