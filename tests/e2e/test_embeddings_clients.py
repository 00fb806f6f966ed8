"""/v1/embeddings, /tokenize and /detokenize through real clients against a real server: the
openai SDK (float and its default base64) and LangChain's OpenAIEmbeddings doing a tiny retrieval."""

from __future__ import annotations

import math

import httpx
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from openai.types import CreateEmbeddingResponse

from tests.e2e.conftest import Server

MODEL = "smollm2-135m-instruct"
SIZE = 576
# Five documents on clearly different topics, and for each a question worded differently from
# it. Mean-pooled vectors of a 135M chat model are weak, so the topics share no vocabulary.
DOCUMENTS = [
    "Paris is the capital of France, famous for the Eiffel Tower.",
    "Python is a programming language used to write software.",
    "Bananas and apples are fruits that are rich in vitamins.",
    "The football match ended with a goal in the final minute.",
    "The piano and the violin are musical instruments.",
]
QUERIES = [
    ("What is the capital of France?", 0),
    ("How do I write code in Python?", 1),
    ("Which fruits are rich in vitamins?", 2),
    ("Who scored the goal in the football match?", 3),
    ("Which musical instruments have strings?", 4),
]


def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="sk-test", max_retries=0)


def cosine(a: list[float], b: list[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(math.fsum(x * x for x in a) * math.fsum(y * y for y in b))


def test_sdk_float_and_default_base64_agree(server: Server) -> None:
    with sdk(server) as client:
        floats, decoded = _float_and_base64(client)
    assert [d.index for d in floats.data] == [0, 1]
    assert all(len(d.embedding) == SIZE for d in floats.data)
    assert all(abs(math.fsum(x * x for x in d.embedding) - 1.0) < 1e-5 for d in floats.data)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    assert [d.embedding for d in decoded.data] == [d.embedding for d in floats.data]


def _float_and_base64(client: openai.OpenAI) -> tuple[CreateEmbeddingResponse, CreateEmbeddingResponse]:
    floats = client.embeddings.create(model=MODEL, input=DOCUMENTS[:2], encoding_format="float")
    # No encoding_format: the SDK asks for base64 and decodes it itself.
    return floats, client.embeddings.create(model=MODEL, input=DOCUMENTS[:2])


def test_sdk_bad_input_is_a_bad_request_naming_input(server: Server) -> None:
    with sdk(server) as client:
        with pytest.raises(openai.BadRequestError) as empty:
            client.embeddings.create(model=MODEL, input="")
        with pytest.raises(openai.BadRequestError) as shortened:
            client.embeddings.create(model=MODEL, input="hello", dimensions=64)
    assert empty.value.param == "input"
    assert shortened.value.code == "unsupported_parameter" and shortened.value.param == "dimensions"


def test_langchain_retrieves_the_right_document(server: Server) -> None:
    with httpx.Client(timeout=60) as http:
        embeddings = OpenAIEmbeddings(
            model=MODEL,
            base_url=f"{server.base_url}/v1",
            api_key="sk-test",  # type: ignore[arg-type]
            check_embedding_ctx_length=False,
            http_client=http,
        )
        docs = embeddings.embed_documents(DOCUMENTS)
        queries = [embeddings.embed_query(query) for query, _ in QUERIES]
    assert len(docs) == len(DOCUMENTS) and all(len(d) == SIZE for d in docs)
    for (query, expected), q in zip(QUERIES, queries, strict=True):
        scores = [cosine(q, d) for d in docs]
        best = max(range(len(docs)), key=scores.__getitem__)
        assert best == expected, f"{query!r} -> {DOCUMENTS[best]!r} (scores {scores})"


def test_tokenize_and_detokenize_over_http(server: Server) -> None:
    auth = {"Authorization": "Bearer sk-test"}
    resp = httpx.post(f"{server.base_url}/tokenize", json={"model": MODEL, "prompt": "Hello world"}, headers=auth)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["count"] == len(body["tokens"]) > 0 and body["max_model_len"] > 0
    back = httpx.post(f"{server.base_url}/detokenize", json={"model": MODEL, "tokens": body["tokens"]}, headers=auth)
    assert back.json() == {"prompt": "Hello world"}
    assert httpx.post(f"{server.base_url}/tokenize", json={"prompt": "x"}).status_code == 401
