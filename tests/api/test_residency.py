"""Models loaded on demand and unloaded when idle: state in /v1/models, keep_alive, LRU eviction
under max_loaded_models and the memory budget, the operator routes, and the metrics.

Two ids serve the real default GGUF (each its own llama.cpp engine). The fake engine appears
only where a real one cannot be made slow to load on demand (the queue-timeout bound).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.device import detect_device
from backends.memplan import GiB, gib, plan_llama_cpp
from backends.registry import create_backend
from backends.types import ModelFormat, ModelSpec
from server.http.app import create_app
from server.runtime.pool import ModelPool, Residency
from server.settings import ModelConfig, Settings
from tests.api.helpers import CAPITAL, assert_openai_error, parse_sse
from tests.fakes import CrashingBackend

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
CHAT = "/v1/chat/completions"


def two_models(make_settings: Callable[..., Settings], model_path: Path, **overrides: Any) -> Settings:
    models = tuple(ModelConfig(id=i, path=model_path, options={"n_ctx": 512, "parallel": 2}) for i in ("a", "b"))
    return make_settings(models=models, **overrides)


def ask(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": CAPITAL, "temperature": 0, "max_tokens": 12, **fields}


async def states(client: httpx.AsyncClient) -> dict[str, str]:
    return {c["id"]: c["state"] for c in (await client.get("/v1/models")).json()["data"]}


async def until_state(client: httpx.AsyncClient, model: str, state: str) -> None:
    for _ in range(200):
        if (await states(client))[model] == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{model} never became {state}: {await states(client)}")


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else " ")) and want in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_on_demand_load_then_keep_alive_zero_unloads(
    app_client: Client, make_settings: Callable[..., Settings], model_path: Path
) -> None:
    async with app_client(two_models(make_settings, model_path, preload=False)) as client:
        assert await states(client) == {"a": "available", "b": "available"}
        assert (await client.get("/ready")).status_code == 200  # available models can serve
        resp = await client.post(CHAT, json=ask("a"))
        assert resp.status_code == 200 and "Paris" in resp.json()["choices"][0]["message"]["content"]
        assert await states(client) == {"a": "loaded", "b": "available"}
        card = (await client.get("/v1/models/a")).json()["status"]
        assert card["memory_bytes"] > model_path.stat().st_size and card["last_load_s"] > 0
        assert card["keep_alive_s"] == -1 and card["expires_in_s"] is None  # the default: forever
        # keep_alive 0: unloaded as soon as the request is over (a stream here).
        resp = await client.post(CHAT, json=ask("a", stream=True, keep_alive=0))
        assert parse_sse(resp.text)[-1] == "[DONE]"
        await until_state(client, "a", "available")
        text = (await client.get("/metrics")).text
        assert metric(text, "quantserve_model_loads_total", model="a") == 1
        assert metric(text, "quantserve_model_load_waits_total", model="a") == 1
        assert metric(text, "quantserve_model_unloads_total", model="a", reason="keep_alive") == 1
        assert metric(text, "quantserve_model_load_seconds_total", model="a") > 0
        assert metric(text, "quantserve_models_loaded") == 0


async def test_idle_models_unload_after_their_keep_alive(
    app_client: Client, make_settings: Callable[..., Settings], model_path: Path
) -> None:
    async with app_client(two_models(make_settings, model_path, keep_alive="600ms")) as client:
        assert await states(client) == {"a": "loaded", "b": "loaded"}  # preloaded, as by default
        assert (await client.post(CHAT, json=ask("b", keep_alive="1h"))).status_code == 200
        await until_state(client, "a", "available")
        card = (await client.get("/v1/models/b")).json()
        assert card["state"] == "loaded" and card["status"]["keep_alive_s"] == 3600
        assert 3000 < card["status"]["expires_in_s"] <= 3600


async def test_max_loaded_models_evicts_the_least_recently_used(
    app_client: Client, make_settings: Callable[..., Settings], model_path: Path
) -> None:
    settings = two_models(make_settings, model_path, preload=False, max_loaded_models=1)
    async with app_client(settings) as client:
        for model in ("a", "b", "a"):
            assert (await client.post(CHAT, json=ask(model))).status_code == 200
            assert (await states(client))[model] == "loaded"
            assert list((await states(client)).values()).count("loaded") == 1
        text = (await client.get("/metrics")).text
        assert metric(text, "quantserve_model_evictions_total", model="a") == 1
        assert metric(text, "quantserve_model_evictions_total", model="b") == 1
        assert metric(text, "quantserve_model_loads_total", model="a") == 2


async def test_memory_budget_evicts_idle_and_refuses_beside_a_busy_model(
    app_client: Client, make_settings: Callable[..., Settings], model_path: Path
) -> None:
    one = plan_llama_cpp(model_path, n_ctx=512, parallel=2).total_bytes  # the planner's weights + KV cache
    budget = 1.5 * one / GiB  # room for one model, not two
    settings = two_models(make_settings, model_path, preload=False, memory_budget_gib=budget)
    async with app_client(settings) as client:
        assert (await client.post(CHAT, json=ask("a"))).status_code == 200
        assert (await client.post(CHAT, json=ask("b"))).status_code == 200  # "a" was idle: evicted
        assert await states(client) == {"a": "available", "b": "loaded"}
        # "b" busy (a request holds it, as a long stream would): "a" cannot be loaded, and the
        # 503 says why, with the numbers.
        pool: ModelPool = client._transport.app.state.pool  # type: ignore[attr-defined]
        lease = await pool.acquire("b")
        try:
            refused = await client.post(CHAT, json=ask("a"))
        finally:
            lease.release()
        message = assert_openai_error(refused, 503, "backend_unavailable")
        assert message == (
            f"Cannot load the model 'a' now: it needs {gib(one)} (weights + KV cache), and the memory budget "
            f"is {gib(int(budget * GiB))}, of which busy models hold {gib(one)}: b ({gib(one)}, 1 request(s)). "
            "Nothing idle can be unloaded; retry when their requests finish."
        )
        assert (await client.post(CHAT, json=ask("a"))).status_code == 200  # "b" idle again: evicted
        assert await states(client) == {"a": "loaded", "b": "available"}


async def test_operator_load_and_unload_need_the_key(
    app_client: Client, make_settings: Callable[..., Settings], model_path: Path
) -> None:
    settings = two_models(make_settings, model_path, preload=False, api_keys=("sk-op",))
    async with app_client(settings) as client:
        assert_openai_error(await client.post("/v1/models/a/load"), 401, "invalid_api_key")
        auth = {"Authorization": "Bearer sk-op"}
        loaded = await client.post("/v1/models/a/load", headers=auth)
        assert loaded.status_code == 200 and loaded.json()["state"] == "loaded"
        assert (await client.post("/v1/models/a/unload", headers=auth)).json()["state"] == "available"
        assert_openai_error(await client.post("/v1/models/nope/load", headers=auth), 404, "model_not_found")
        text = (await client.get("/metrics", headers=auth)).text
        assert metric(text, "quantserve_model_unloads_total", model="a", reason="operator") == 1


async def test_a_bad_keep_alive_is_a_400(client: httpx.AsyncClient) -> None:
    resp = await client.post(CHAT, json=ask("smollm2-135m-instruct", keep_alive="soon"))
    message = assert_openai_error(resp, 400, "invalid_value", "keep_alive")
    assert "'soon' is not a duration" in message


async def test_waiting_for_a_load_is_bounded_and_unloaded_models_are_not_supervised(
    make_settings: Callable[..., Settings], model_path: Path
) -> None:
    # A fake engine: a real one cannot be held mid-load on demand.
    fake = CrashingBackend("slow")
    fake.start_gate = asyncio.Event()
    spec = ModelSpec("real", model_path, ModelFormat.GGUF, options={"n_ctx": 512})
    pool = ModelPool(
        {"real": create_backend(spec, detect_device()), "slow": fake},
        residency=Residency(preload={"slow": False}, load_wait_s=0.3),
    )
    await pool.start_all()
    app = create_app(make_settings(), pool)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        resp = await client.post(CHAT, json=ask("slow"))
        assert "did not finish loading within 0.3 s" in assert_openai_error(resp, 503, "queue_timeout")
        assert (await states(client))["slow"] == "loading"
        fake.start_gate.set()
        assert (await client.post(CHAT, json=ask("slow", max_tokens=2))).status_code == 200
        assert fake.starts == 1  # the timed-out request did not cancel or repeat the load
        assert (await client.post("/v1/models/slow/unload")).json()["state"] == "available"
        await asyncio.sleep(0.5)  # several supervisor intervals: an unloaded model is left alone
        assert fake.starts == 1 and not fake.loaded


@pytest.mark.parametrize("value", ["5m", 300, "-1", 0])
async def test_keep_alive_setting_accepts_ollama_forms(make_settings: Callable[..., Settings], value: Any) -> None:
    seconds = make_settings(keep_alive=value).keep_alive
    assert seconds == {"5m": 300, 300: 300, "-1": float("inf"), 0: 0}[value]
