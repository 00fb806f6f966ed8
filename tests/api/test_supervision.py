"""Engine supervision: a model whose engine dies answers 503 while the others keep serving,
``/ready`` names it and why, and the engine is restarted (or given up on after max_restarts).

The crashing model is a fake (tests/fakes.py: a real engine cannot die on demand), served in one
app beside the real SmolLM2 GGUF; the last test breaks the real llama.cpp engine's decode.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.device import detect_device
from backends.registry import create_backend
from backends.types import ModelFormat, ModelSpec
from server.http.app import create_app
from server.runtime.pool import ModelPool
from server.runtime.supervisor import RestartPolicy
from server.settings import Settings
from tests.api.helpers import MODEL, assert_openai_error, chat_body, parse_sse
from tests.fakes import CrashingBackend

FAKE = "fake-model"
CHAT = "/v1/chat/completions"
POLICY = RestartPolicy(interval_s=0.02, max_restarts=2, backoff_s=0.01)


def fake_body(**fields: Any) -> dict[str, Any]:
    return chat_body(model=FAKE, **fields)


@asynccontextmanager
async def serve(
    model_path: Path, settings: Settings, fake: CrashingBackend, options: dict[str, Any] | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, ModelPool]]:
    """One app serving the real GGUF model and the fake, supervised by POLICY."""
    spec = ModelSpec(MODEL, model_path, ModelFormat.GGUF, options=options or {"n_ctx": 512, "parallel": 2})
    pool = ModelPool({MODEL: create_backend(spec, detect_device()), FAKE: fake}, policy=POLICY)
    await pool.start_all()
    app = create_app(settings, pool)
    async with app.router.lifespan_context(app):  # stops the pool on the way out
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120) as client:
            yield client, pool


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def ready_states(client: httpx.AsyncClient) -> tuple[int, dict[str, dict[str, Any]]]:
    resp = await client.get("/ready")
    return resp.status_code, {m["model_id"]: m for m in resp.json()["models"]}


async def real_model_answers(client: httpx.AsyncClient) -> None:
    resp = await client.post(CHAT, json=chat_body(max_tokens=8))
    assert resp.status_code == 200, resp.text
    assert "Paris" in resp.json()["choices"][0]["message"]["content"]


def text_of(events: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events if isinstance(e, dict) and e.get("choices")
    )


async def test_a_crashed_engine_is_503_while_the_other_model_serves_then_it_restarts(
    model_path: Path, make_settings: Callable[..., Settings]
) -> None:
    fake = CrashingBackend(FAKE)
    async with serve(model_path, make_settings(), fake) as (client, _pool):
        before = await client.post(CHAT, json=fake_body(max_tokens=3))
        assert before.json()["choices"][0]["message"]["content"] == " w0 w1 w2"

        fake.start_gate = asyncio.Event()  # hold the restart, so the test sees the model while it is down
        fake.crash_after = 2
        stream = await client.post(CHAT, json=fake_body(max_tokens=50, stream=True))
        assert stream.status_code == 200  # the crash came after the first token
        events = parse_sse(stream.text)
        assert text_of(events) == " w0 w1"
        assert events[-1] == "[DONE]"
        assert events[-2]["error"]["code"] == "backend_unavailable"
        assert events[-2]["error"]["type"] == "server_error"

        assert_openai_error(await client.post(CHAT, json=fake_body(max_tokens=3)), 503, "backend_unavailable")
        await until(lambda: fake.starts == 2, "the supervisor to start the fake again")
        status, models = await ready_states(client)
        assert status == 503
        assert models[MODEL] == {"model_id": MODEL, "ready": True, "reason": ""}
        assert not models[FAKE]["ready"]
        assert "injected engine crash" in models[FAKE]["reason"]
        assert "restart attempt 1 of 2" in models[FAKE]["reason"]
        down = await client.post(CHAT, json=fake_body(max_tokens=3))
        assert "injected engine crash" in assert_openai_error(down, 503, "backend_unavailable")
        await real_model_answers(client)

        fake.start_gate.set()
        for _ in range(3000):
            status, models = await ready_states(client)
            if status == 200:
                break
            await asyncio.sleep(0.01)
        assert status == 200 and models[FAKE] == {"model_id": FAKE, "ready": True, "reason": ""}
        after = await client.post(CHAT, json=fake_body(max_tokens=3))
        assert after.json()["choices"][0]["message"]["content"] == " w0 w1 w2"
        await real_model_answers(client)


async def test_after_max_restarts_the_model_stays_unavailable_with_the_reason(
    model_path: Path, make_settings: Callable[..., Settings]
) -> None:
    fake = CrashingBackend(FAKE)
    async with serve(model_path, make_settings(), fake) as (client, _pool):
        fake.failing_starts = 100
        fake.crash_after = 0  # dies before its first token: the request itself gets the 503
        assert_openai_error(await client.post(CHAT, json=fake_body(max_tokens=3)), 503, "backend_unavailable")
        reason = ""
        for _ in range(3000):
            _, models = await ready_states(client)
            reason = models[FAKE]["reason"]
            if "not restarted" in reason:
                break
            await asyncio.sleep(0.01)
        assert "injected engine crash" in reason
        assert "not restarted after 2 attempts" in reason
        assert "the fake engine refused to start" in reason
        assert fake.starts == 1 + POLICY.max_restarts
        message = assert_openai_error(await client.post(CHAT, json=fake_body(max_tokens=3)), 503, "backend_unavailable")
        assert "not restarted" in message
        await real_model_answers(client)
        await asyncio.sleep(POLICY.interval_s * 5)
        assert fake.starts == 1 + POLICY.max_restarts, "a model given up on is not restarted again"


async def test_a_crashed_llama_cpp_engine_reports_why_and_is_restarted(
    model_path: Path, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="server.runtime.supervisor")
    # The in-process engine, whose thread can be broken from here; a native crash of the engine
    # process (the default) is tested with real signals in tests/e2e/test_engine_crash.py.
    in_process = {"n_ctx": 512, "parallel": 2, "engine_process": False}
    async with serve(model_path, make_settings(), CrashingBackend(FAKE), in_process) as (client, pool):
        backend = pool.get(MODEL)
        engine = backend._engine  # type: ignore[attr-defined]

        def broken_decode(n_tokens: int) -> int:
            raise RuntimeError("injected decode fault")

        engine._scheduler._native.decode = broken_decode  # the engine thread dies on its next step
        assert_openai_error(await client.post(CHAT, json=chat_body(max_tokens=8)), 503, "backend_unavailable")
        # The requests were failed on the thread's way out; it may take a moment more to end.
        await until(lambda: not engine.alive, "the engine thread to end")
        assert engine.failure == "RuntimeError: injected decode fault"
        await until(lambda: backend._engine not in (None, engine), "a new llama.cpp engine")  # type: ignore[attr-defined]
        for _ in range(3000):
            if (await client.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.01)
        await real_model_answers(client)
        assert any("RuntimeError: injected decode fault" in r.getMessage() for r in caplog.records)
        fake_ok = await client.post(CHAT, json=fake_body(max_tokens=2))
        assert fake_ok.status_code == 200
