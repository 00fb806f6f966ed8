"""POST /v1/embeddings in process, on the real SmolLM2 GGUF (llama.cpp embedding mode)."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.runtime.metrics import Metrics
from server.settings import ModelConfig, Settings
from tests.api.helpers import MODEL, assert_openai_error
from tests.conftest import ClientFactory

SIZE = 576  # SmolLM2-135M's hidden size
TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply today.", "Bake the bread for thirty minutes."]


async def embed(client: httpx.AsyncClient, input_: Any, **fields: Any) -> dict[str, Any]:
    resp = await client.post("/v1/embeddings", json={"model": MODEL, "input": input_, **fields})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def vectors(body: dict[str, Any]) -> list[list[float]]:
    return [item["embedding"] for item in body["data"]]


def norm(v: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in v))


async def test_response_has_openais_shape_and_unit_vectors(client: httpx.AsyncClient) -> None:
    body = await embed(client, TEXTS, user="user-1")
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["object"] == "list" and body["model"] == MODEL
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    for item in body["data"]:
        assert set(item) == {"object", "index", "embedding"} and item["object"] == "embedding"
        assert len(item["embedding"]) == SIZE
        assert abs(norm(item["embedding"]) - 1.0) < 1e-5
    usage = body["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > len(TEXTS)
    # Three different texts, three different vectors.
    a, b, c = vectors(body)
    assert a != b and b != c and a != c


async def test_usage_counts_the_models_tokens(client: httpx.AsyncClient) -> None:
    counts = []
    for text in TEXTS:
        resp = await client.post("/tokenize", json={"model": MODEL, "prompt": text})
        counts.append(resp.json()["count"])
    body = await embed(client, TEXTS)
    assert body["usage"]["prompt_tokens"] == sum(counts)


async def test_same_input_same_vector(client: httpx.AsyncClient) -> None:
    first = vectors(await embed(client, TEXTS[0]))[0]
    second = vectors(await embed(client, TEXTS[0]))[0]
    assert first == second


async def test_batch_equals_singles_in_order(client: httpx.AsyncClient) -> None:
    batch = vectors(await embed(client, TEXTS))
    singles = [vectors(await embed(client, text))[0] for text in TEXTS]
    for together, alone in zip(batch, singles, strict=True):
        # Packed into one decode the rows are computed alike; only the pooling sum may round differently.
        assert max(abs(x - y) for x, y in zip(together, alone, strict=True)) < 1e-5


async def test_base64_decodes_to_the_same_floats(client: httpx.AsyncClient) -> None:
    floats = vectors(await embed(client, TEXTS, encoding_format="float"))
    encoded = await embed(client, TEXTS, encoding_format="base64")
    for item, expected in zip(encoded["data"], floats, strict=True):
        assert isinstance(item["embedding"], str)
        raw = base64.b64decode(item["embedding"])
        assert len(raw) == 4 * SIZE
        assert list(struct.unpack(f"<{SIZE}f", raw)) == expected


async def test_token_ids_embed_like_their_text(client: httpx.AsyncClient) -> None:
    ids = []
    for text in TEXTS[:2]:
        ids.append((await client.post("/tokenize", json={"model": MODEL, "prompt": text})).json()["tokens"])
    assert vectors(await embed(client, ids[0])) == vectors(await embed(client, TEXTS[0]))  # list[int]: one input
    assert vectors(await embed(client, ids)) == vectors(await embed(client, TEXTS[:2]))  # list[list[int]]: a batch


async def test_dimensions_equal_to_the_models_size_is_accepted(client: httpx.AsyncClient) -> None:
    body = await embed(client, "hello", dimensions=SIZE)
    assert len(body["data"][0]["embedding"]) == SIZE


LONG = "hello " * 1100  # > the 1024-token test context

BAD_INPUTS: list[tuple[dict[str, Any], str, str]] = [
    ({"input": ""}, "input", "invalid_value"),
    ({"input": []}, "input", "invalid_value"),
    ({"input": ["fine", ""]}, "input", "invalid_value"),
    ({"input": [[]]}, "input", "invalid_value"),
    ({"input": [[1, 2], []]}, "input", "invalid_value"),
    ({"input": [-1]}, "input", "invalid_value"),
    ({"input": [[5], [49152]]}, "input", "invalid_value"),
    ({"input": ["text", 7]}, "input", "invalid_value"),
    ({"input": {"text": "x"}}, "input", "invalid_value"),
    ({"input": ["a"] * 2049}, "input", "invalid_value"),
    ({"input": LONG}, "input", "context_length_exceeded"),
    ({"input": ["short", LONG]}, "input", "context_length_exceeded"),
    ({"input": "x", "dimensions": 0}, "dimensions", "invalid_value"),
    ({"input": "x", "dimensions": 256}, "dimensions", "unsupported_parameter"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format", "invalid_value"),
    ({"input": "x", "truncate": True}, "truncate", "invalid_value"),
]


@pytest.mark.parametrize(("fields", "param", "code"), BAD_INPUTS)
async def test_bad_input_is_a_400_naming_the_field(
    client: httpx.AsyncClient, fields: dict[str, Any], param: str, code: str
) -> None:
    resp = await client.post("/v1/embeddings", json={"model": MODEL, **fields})
    assert_openai_error(resp, 400, code, param)
    # ... and the model keeps serving.
    assert len(vectors(await embed(client, "still here"))[0]) == SIZE


async def test_lone_surrogate_is_a_400_naming_input(client: httpx.AsyncClient) -> None:
    body = '{"model": "' + MODEL + '", "input": ["fine", "a\\ud800b"]}'
    resp = await client.post("/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    assert "input[1]" in assert_openai_error(resp, 400, "invalid_value", "input")


async def test_missing_fields_and_unknown_model(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.post("/v1/embeddings", json={"model": MODEL}), 400, "invalid_value", "input")
    assert_openai_error(await client.post("/v1/embeddings", json={"input": "x"}), 400, "invalid_value", "model")
    resp = await client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    assert_openai_error(resp, 404, "model_not_found", "model")


def embedding_requests(client: httpx.AsyncClient, status: str) -> float:
    metrics: Metrics = client.app.state.metrics
    labels = {"model": MODEL, "backend": "llama_cpp", "endpoint": "embeddings", "status": status}
    return metrics.registry.get_sample_value("quantserve_requests_total", {**labels, "finish_reason": "none"}) or 0.0


async def test_counted_in_metrics(client: httpx.AsyncClient) -> None:
    ok, bad = embedding_requests(client, "ok"), embedding_requests(client, "invalid_request")
    await embed(client, "count me")
    resp = await client.post("/v1/embeddings", json={"model": MODEL, "input": LONG})
    assert_openai_error(resp, 400, "context_length_exceeded")
    assert embedding_requests(client, "ok") == ok + 1
    assert embedding_requests(client, "invalid_request") == bad + 1


async def test_operator_cap_and_api_key_apply(
    app_client: ClientFactory, make_settings: Callable[..., Settings], model_path: Path
) -> None:
    model = ModelConfig(id=MODEL, path=model_path, options={"n_ctx": 1024}, max_prompt_tokens=8)
    async with app_client(make_settings(models=(model,), api_keys=("sk-embed",))) as c:
        resp = await c.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
        assert_openai_error(resp, 401, "invalid_api_key")
        auth = {"Authorization": "Bearer sk-embed"}
        resp = await c.post("/v1/embeddings", json={"model": MODEL, "input": "one two three " * 5}, headers=auth)
        message = assert_openai_error(resp, 400, "context_length_exceeded", "input")
        assert "8" in message
        resp = await c.post("/v1/embeddings", json={"model": MODEL, "input": "short"}, headers=auth)
        assert resp.status_code == 200
