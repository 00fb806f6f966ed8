"""/metrics and the metrics wrapper (server.runtime.observe) on the real SmolLM2 GGUF, in process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from backends.types import GenerationChunk, GenerationRequest, Message, SamplingParams
from server.runtime.metrics import Metrics
from server.runtime.observe import observe
from server.settings import Settings
from tests.api.helpers import MODEL, assert_openai_error, chat_body, parse_sse
from tests.conftest import ClientFactory

M = {"model": MODEL, "backend": "llama_cpp"}


def app_metrics(client: httpx.AsyncClient) -> Metrics:
    metrics: Metrics = client.app.state.metrics
    return metrics


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {**M, **labels}) or 0.0


def requests(metrics: Metrics, status: str, finish_reason: str, endpoint: str = "chat_completions") -> float:
    labels = {"endpoint": endpoint, "status": status, "finish_reason": finish_reason}
    return value(metrics, "quantserve_requests_total", **labels)


async def scrape(client: httpx.AsyncClient, **kw: Any) -> dict[str, list[tuple[dict[str, str], float]]]:
    resp = await client.get("/metrics", **kw)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return _samples(resp.text)


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


async def test_ok_requests_count_tokens_and_latencies(client: httpx.AsyncClient) -> None:
    m = app_metrics(client)
    before = {
        "ok": requests(m, "ok", "length"),
        "ok_cmpl": requests(m, "ok", "length", "completions"),
        "gen": value(m, "quantserve_generation_tokens_total"),
        "prompt": value(m, "quantserve_prompt_tokens_total"),
        "ttft": value(m, "quantserve_time_to_first_token_seconds_count"),
        "itl": value(m, "quantserve_inter_token_latency_seconds_count"),
        "e2e": value(m, "quantserve_e2e_request_latency_seconds_count"),
    }
    full = (await client.post("/v1/chat/completions", json=chat_body(max_tokens=5))).json()
    streamed = await client.post(
        "/v1/chat/completions", json=chat_body(max_tokens=4, stream=True, stream_options={"include_usage": True})
    )
    cmpl = (await client.post("/v1/completions", json={"model": MODEL, "prompt": "Paris is", "max_tokens": 3})).json()
    usages = [full["usage"], parse_sse(streamed.text)[-2]["usage"], cmpl["usage"]]
    assert [u["completion_tokens"] for u in usages] == [5, 4, 3]

    assert requests(m, "ok", "length") - before["ok"] == 2
    assert requests(m, "ok", "length", "completions") - before["ok_cmpl"] == 1
    assert value(m, "quantserve_generation_tokens_total") - before["gen"] == 12
    assert value(m, "quantserve_prompt_tokens_total") - before["prompt"] == sum(u["prompt_tokens"] for u in usages)
    assert value(m, "quantserve_time_to_first_token_seconds_count") - before["ttft"] == 3
    assert value(m, "quantserve_e2e_request_latency_seconds_count") - before["e2e"] == 3
    # One sampled token per chunk on this engine: every token after a request's first has a gap.
    assert value(m, "quantserve_inter_token_latency_seconds_count") - before["itl"] == 4 + 3 + 2


async def test_failed_requests_are_counted_with_their_status(client: httpx.AsyncClient) -> None:
    m = app_metrics(client)
    bad, ttft = requests(m, "invalid_request", "none"), value(m, "quantserve_time_to_first_token_seconds_count")
    resp = await client.post("/v1/chat/completions", json=chat_body(max_tokens=100_000))
    assert_openai_error(resp, 400, "context_length_exceeded", "max_tokens")
    stream = await client.post("/v1/chat/completions", json=chat_body(max_tokens=100_000, stream=True))
    assert_openai_error(stream, 400, "context_length_exceeded", "max_tokens")
    assert requests(m, "invalid_request", "none") - bad == 2
    assert value(m, "quantserve_time_to_first_token_seconds_count") == ttft, "no token, no TTFT"


async def test_overloaded_is_counted(app_client: ClientFactory, make_settings: Callable[..., Settings]) -> None:
    # One slot, no waiting room: while the slot is busy, the next request is refused.
    async with app_client(make_settings({"n_ctx": 512, "parallel": 1, "max_queue": 0})) as c:
        backend = c.app.state.pool.get(MODEL)  # type: ignore[attr-defined]
        busy = backend.generate(_request(200))
        await anext(busy)
        try:
            resp = await c.post("/v1/chat/completions", json=chat_body(max_tokens=2))
            assert_openai_error(resp, 429, "overloaded")
            assert int(resp.headers["retry-after"]) >= 1
        finally:
            await busy.aclose()
        m = app_metrics(c)
        assert requests(m, "overloaded", "none") == 1
        assert requests(m, "ok", "length") == 0
        ok = await c.post("/v1/chat/completions", json=chat_body(max_tokens=2))  # the slot is free again
        assert ok.status_code == 200


def _request(max_tokens: int) -> GenerationRequest:
    return GenerationRequest(
        "metrics-test",
        SamplingParams(max_tokens=max_tokens, temperature=0),
        messages=(Message("user", "Write a long story about a dragon."),),
    )


async def test_closed_stream_counts_as_cancelled_and_frees_the_gauges(client: httpx.AsyncClient) -> None:
    """What the HTTP layer does when the client goes away: close the iterator mid-stream."""
    m = app_metrics(client)
    backend = client.app.state.pool.get(MODEL)  # type: ignore[attr-defined]
    cancelled, gen_tokens = requests(m, "cancelled", "none"), value(m, "quantserve_generation_tokens_total")
    chunks = observe(m, backend, "chat_completions", backend.generate(_request(200)))
    got = [await anext(chunks), await anext(chunks)]
    assert all(c.finish_reason is None for c in got)
    live = await scrape(client)
    assert live["quantserve_num_requests_running"] == [(M, 1.0)]
    await chunks.aclose()  # type: ignore[attr-defined]
    assert requests(m, "cancelled", "none") - cancelled == 1
    assert value(m, "quantserve_generation_tokens_total") - gen_tokens == sum(c.tokens for c in got) == 2
    for _ in range(100):  # the engine lets go of the slot when its worker thread stops
        if (await scrape(client))["quantserve_num_requests_running"] == [(M, 0.0)]:
            break
        await asyncio.sleep(0.05)
    assert (await scrape(client))["quantserve_num_requests_running"] == [(M, 0.0)]
    assert m.in_flight[MODEL] == 0


async def test_cancelled_task_counts_as_cancelled(client: httpx.AsyncClient) -> None:
    m = app_metrics(client)
    backend = client.app.state.pool.get(MODEL)  # type: ignore[attr-defined]
    before = requests(m, "cancelled", "none")
    first = asyncio.Event()

    async def consume() -> None:
        chunks = observe(m, backend, "chat_completions", backend.generate(_request(200)))
        try:
            async for _chunk in chunks:
                first.set()
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 60)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=60)
    assert done and task.cancelled()
    assert requests(m, "cancelled", "none") - before == 1


async def test_a_finished_stream_closed_afterwards_is_not_cancelled(client: httpx.AsyncClient) -> None:
    m = app_metrics(client)
    backend = client.app.state.pool.get(MODEL)  # type: ignore[attr-defined]
    ok, cancelled = requests(m, "ok", "length"), requests(m, "cancelled", "none")
    chunks = observe(m, backend, "chat_completions", backend.generate(_request(3)))
    last: GenerationChunk | None = None
    while last is None or last.finish_reason is None:
        last = await anext(chunks)
    await chunks.aclose()  # type: ignore[attr-defined]  # as Generation.close() does after the last chunk
    assert requests(m, "ok", "length") - ok == 1
    assert requests(m, "cancelled", "none") == cancelled


async def test_scrape_has_gauges_and_model_info(client: httpx.AsyncClient) -> None:
    samples = await scrape(client)
    assert samples["quantserve_num_requests_running"] == [(M, 0.0)]
    assert samples["quantserve_num_requests_waiting"] == [(M, 0.0)]
    info = {
        **M,
        "device": "cpu",
        "format": "gguf",
        "quantization": "Q4_1",
        "kv_cache_dtype": "k:f16,v:f16",
        "context_length": "1024",
    }
    assert samples["quantserve_model_info"] == [(info, 1.0)]
    # Read from the engine at scrape time (idle now: 0).
    kv = backend_kv(client)
    assert kv is not None
    assert samples["quantserve_kv_cache_usage_ratio"] == [(M, kv)]


def backend_kv(client: httpx.AsyncClient) -> float | None:
    backend = client.app.state.pool.get(MODEL)  # type: ignore[attr-defined]
    kv: float | None = backend.stats().kv_cache_usage
    return kv


async def test_metrics_route_auth(app_client: ClientFactory, make_settings: Callable[..., Settings]) -> None:
    async with app_client(make_settings(api_keys=("sk-1",))) as c:
        assert_openai_error(await c.get("/metrics"), 401, "invalid_api_key")
        assert (await c.get("/metrics", headers={"Authorization": "Bearer sk-1"})).status_code == 200
    open_paths = ("/health", "/ready", "/metrics")
    async with app_client(make_settings(api_keys=("sk-1",), open_paths=open_paths)) as c:
        assert (await c.get("/metrics")).status_code == 200, "listed as open: a scraper needs no key"


async def test_each_app_has_its_own_registry(app_client: ClientFactory, client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=chat_body(max_tokens=1))
    async with app_client() as fresh:
        assert app_metrics(fresh).registry is not app_metrics(client).registry
        assert requests(app_metrics(fresh), "ok", "length") == 0
        assert requests(app_metrics(client), "ok", "length") >= 1


async def test_queue_time_comes_from_the_engine_and_is_taken_out_of_prefill(
    app_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    # One slot: a second request must wait for the first.
    async with app_client(make_settings({"n_ctx": 1024, "parallel": 1})) as c:
        await _queue_then_prefill(c)


async def _queue_then_prefill(client: httpx.AsyncClient) -> None:
    m = app_metrics(client)
    backend = client.app.state.pool.get(MODEL)  # type: ignore[attr-defined]

    def snapshot() -> dict[str, float]:
        names = ["time_to_first_token", "request_prefill_time", "request_queue_time"]
        out = {}
        for name in names:
            for part in ("count", "sum"):
                out[f"{name}_{part}"] = value(m, f"quantserve_{name}_seconds_{part}")
        return out

    before = snapshot()
    first = observe(m, backend, "chat_completions", backend.generate(_request(50)))
    await anext(first)
    # Created while `first` holds the only slot: it queues until `first` is closed.
    second = observe(m, backend, "chat_completions", backend.generate(_request(2)))
    waiter = asyncio.ensure_future(anext(second))
    await asyncio.sleep(0.3)
    await first.aclose()  # type: ignore[attr-defined]
    await waiter
    async for _chunk in second:
        pass
    after = snapshot()
    delta = {k: after[k] - before[k] for k in after}
    assert delta["time_to_first_token_count"] == 2
    assert delta["request_queue_time_count"] == 2
    assert delta["request_prefill_time_count"] == 2
    assert delta["request_queue_time_sum"] >= 0.3  # the second request really waited
    # prefill = TTFT - queue time, so queueing never inflates it
    assert (
        delta["request_prefill_time_sum"] <= delta["time_to_first_token_sum"] - delta["request_queue_time_sum"] + 1e-6
    )
