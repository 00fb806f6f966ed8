"""/v1/chat/completions and /v1/completions on the real SmolLM2 GGUF, in process."""

from __future__ import annotations

import httpx

from tests.api.helpers import CAPITAL, MODEL, chat_body, parse_sse


async def test_greedy_chat_answers_paris_and_is_deterministic(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/chat/completions", json=chat_body(max_tokens=40))
    second = await client.post("/v1/chat/completions", json=chat_body(max_tokens=40))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    assert second.json()["choices"][0]["message"]["content"] == choice["message"]["content"]


async def test_usage_matches_the_models_tokenizer(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/chat/completions", json=chat_body(max_tokens=40))
    usage = resp.json()["usage"]
    text = resp.json()["choices"][0]["message"]["content"]
    app = client.app
    backend = app.state.pool.get(MODEL)
    from backends.types import GenerationRequest, Message

    prompt = backend.tokenize_request(GenerationRequest("t", messages=(Message("user", CAPITAL[0]["content"]),)))
    assert usage["prompt_tokens"] == len(prompt)
    assert usage["completion_tokens"] == len(backend._engine.tokenize(text, add_special=False))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_max_tokens_gives_length_with_exactly_that_many_tokens(client: httpx.AsyncClient) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        resp = await client.post("/v1/chat/completions", json=chat_body(**{field: 3}))
        body = resp.json()
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 3


async def test_stop_sequence_cuts_the_text(client: httpx.AsyncClient) -> None:
    full = (await client.post("/v1/chat/completions", json=chat_body(max_tokens=40))).json()
    text = full["choices"][0]["message"]["content"]
    assert " is " in text
    cut = (await client.post("/v1/chat/completions", json=chat_body(max_tokens=40, stop=[" is ", "zzz"]))).json()
    assert cut["choices"][0]["message"]["content"] == text.split(" is ")[0]
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] < full["usage"]["completion_tokens"]


async def test_stream_has_openai_shape_and_same_text_as_non_stream(client: httpx.AsyncClient) -> None:
    full = (await client.post("/v1/chat/completions", json=chat_body(max_tokens=40))).json()
    resp = await client.post(
        "/v1/chat/completions", json=chat_body(max_tokens=40, stream=True, stream_options={"include_usage": True})
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(resp.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["id"] == chunks[0]["id"] and c["object"] == "chat.completion.chunk" for c in chunks)
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == full["usage"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == full["choices"][0]["message"]["content"]


async def test_seed_makes_sampling_reproducible(client: httpx.AsyncClient) -> None:
    body = chat_body(max_tokens=20, temperature=1.0, top_p=0.95, seed=1234)
    texts = [
        (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]["message"]["content"] for _ in "ab"
    ]
    assert texts[0] == texts[1]
    others = set()
    for seed in range(5):
        resp = await client.post("/v1/chat/completions", json={**body, "seed": seed, "temperature": 1.5})
        others.add(resp.json()["choices"][0]["message"]["content"])
    assert len(others) > 1  # different seeds really sample differently


async def test_completions_endpoint(client: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "prompt": "The capital of France is", "temperature": 0, "max_tokens": 4}
    resp = await client.post("/v1/completions", json=body)
    assert resp.status_code == 200
    data = resp.json()
    assert data["object"] == "text_completion"
    assert "Paris" in data["choices"][0]["text"]
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 4
    stream = await client.post("/v1/completions", json={**body, "stream": True})
    events = parse_sse(stream.text)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == data["choices"][0]["text"]


async def test_penalties_change_greedy_output(client: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "prompt": "one one one one one one", "temperature": 0, "max_tokens": 12}
    plain = (await client.post("/v1/completions", json=body)).json()["choices"][0]["text"]
    penalised = await client.post("/v1/completions", json={**body, "repeat_penalty": 2.0, "presence_penalty": 2.0})
    assert penalised.json()["choices"][0]["text"] != plain
