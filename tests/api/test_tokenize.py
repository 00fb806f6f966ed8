"""POST /tokenize and /detokenize (vLLM's request and response fields) on the real SmolLM2 GGUF."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.helpers import CAPITAL, MODEL, assert_openai_error

N_CTX = 1024  # the API tests' context
ASSISTANT_OPENS = "<|im_start|>assistant\n"


async def tokenize(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    resp = await client.post("/tokenize", json={"model": MODEL, **fields})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def detokenize(client: httpx.AsyncClient, tokens: list[int]) -> str:
    resp = await client.post("/detokenize", json={"model": MODEL, "tokens": tokens})
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"prompt"}
    return str(resp.json()["prompt"])


@pytest.mark.parametrize("text", ["Hello world", "  spaces\tand\nnewlines ", "héllo wörld, 日本語 🙂"])
async def test_prompt_round_trips(client: httpx.AsyncClient, text: str) -> None:
    body = await tokenize(client, prompt=text)
    assert set(body) == {"count", "max_model_len", "tokens", "token_strs"}
    assert body["count"] == len(body["tokens"]) > 0
    assert body["max_model_len"] == N_CTX
    assert body["token_strs"] is None
    assert all(isinstance(t, int) and t >= 0 for t in body["tokens"])
    assert await detokenize(client, body["tokens"]) == text


async def test_token_strs_are_the_vocabulary_spellings(client: httpx.AsyncClient) -> None:
    body = await tokenize(client, prompt="Hello big world", return_token_strs=True)
    assert len(body["token_strs"]) == body["count"]
    # GPT-2 byte-level BPE writes a leading space as "Ġ", as Hugging Face's convert_ids_to_tokens does.
    assert "".join(body["token_strs"]).replace("Ġ", " ") == "Hello big world"


async def test_messages_are_tokenized_exactly_as_the_chat_route_does(client: httpx.AsyncClient) -> None:
    body = await tokenize(client, messages=CAPITAL)
    chat = await client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": CAPITAL, "max_tokens": 1, "temperature": 0}
    )
    assert chat.status_code == 200, chat.text
    assert body["count"] == chat.json()["usage"]["prompt_tokens"]
    rendered = await detokenize(client, body["tokens"])
    assert rendered.endswith("Which city is the capital of France?<|im_end|>\n" + ASSISTANT_OPENS)


async def test_generation_prompt_and_continue_final_message(client: httpx.AsyncClient) -> None:
    without = await detokenize(
        client, (await tokenize(client, messages=CAPITAL, add_generation_prompt=False))["tokens"]
    )
    assert without.endswith("France?<|im_end|>\n") and not without.endswith(ASSISTANT_OPENS)
    partial = [*CAPITAL, {"role": "assistant", "content": "The capital is"}]
    body = await tokenize(client, messages=partial, continue_final_message=True)
    text = await detokenize(client, body["tokens"])
    assert text.endswith(ASSISTANT_OPENS + "The capital is")  # left open: no <|im_end|>


async def test_model_may_be_omitted_when_one_model_is_served(client: httpx.AsyncClient) -> None:
    resp = await client.post("/tokenize", json={"prompt": "Hello world"})
    assert resp.status_code == 200 and resp.json()["tokens"] == (await tokenize(client, prompt="Hello world"))["tokens"]
    resp = await client.post("/detokenize", json={"tokens": resp.json()["tokens"]})
    assert resp.json() == {"prompt": "Hello world"}


async def test_special_tokens_are_written_out(client: httpx.AsyncClient) -> None:
    body = await tokenize(client, prompt="<|im_start|>user")
    assert body["count"] == 2  # the control token is parsed, not spelled out
    assert await detokenize(client, body["tokens"]) == "<|im_start|>user"


async def test_empty_inputs(client: httpx.AsyncClient) -> None:
    body = await tokenize(client, prompt="")
    assert body["tokens"] == [] and body["count"] == 0
    assert await detokenize(client, []) == ""


BAD_TOKENIZE: list[tuple[dict[str, Any], int, str, str]] = [
    ({"model": MODEL}, 400, "invalid_value", "prompt"),
    ({"model": MODEL, "prompt": "x", "messages": CAPITAL}, 400, "invalid_value", "prompt"),
    ({"model": MODEL, "messages": []}, 400, "invalid_value", "messages"),
    ({"model": MODEL, "prompt": 5}, 400, "invalid_value", "prompt"),
    ({"model": MODEL, "prompt": "x", "add_generation_prompt": True}, 400, "invalid_value", "add_generation_prompt"),
    (
        {"model": MODEL, "messages": CAPITAL, "add_generation_prompt": True, "continue_final_message": True},
        400,
        "invalid_value",
        "continue_final_message",
    ),
    ({"model": MODEL, "messages": CAPITAL, "tools": []}, 400, "unsupported_parameter", "tools"),
    ({"model": MODEL, "messages": CAPITAL, "chat_template": "{{ x }}"}, 400, "unsupported_parameter", "chat_template"),
    ({"model": MODEL, "prompt": "x", "max_tokens": 3}, 400, "invalid_value", "max_tokens"),
    ({"model": "nope", "prompt": "x"}, 404, "model_not_found", "model"),
]


@pytest.mark.parametrize(("body", "status", "code", "param"), BAD_TOKENIZE)
async def test_bad_tokenize_requests(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, code: str, param: str
) -> None:
    assert_openai_error(await client.post("/tokenize", json=body), status, code, param)
    assert (await tokenize(client, prompt="still serving"))["count"] > 0


@pytest.mark.parametrize("tokens", [[-1], [49152], [1, 2**70], [1, "a"], "12", None])
async def test_bad_token_ids_name_tokens(client: httpx.AsyncClient, tokens: Any) -> None:
    resp = await client.post("/detokenize", json={"model": MODEL, "tokens": tokens})
    assert_openai_error(resp, 400, "invalid_value")
    assert resp.json()["error"]["param"].split(".")[0] == "tokens"  # "tokens.1" for a non-integer item
    assert await detokenize(client, (await tokenize(client, prompt="Hello"))["tokens"]) == "Hello"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"prompt": "a\\ud800b"}', "prompt"),
        ('{"messages": [{"role": "user", "content": "a\\udfffb"}]}', None),
    ],
)
async def test_lone_surrogates_are_a_400_not_a_crash(client: httpx.AsyncClient, body: str, param: str | None) -> None:
    # Valid JSON, but text no tokenizer can encode.
    resp = await client.post("/tokenize", content=body, headers={"Content-Type": "application/json"})
    assert_openai_error(resp, 400, "invalid_value", param)
    assert "Unicode" in resp.json()["error"]["message"]
