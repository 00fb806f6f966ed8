"""The official openai SDK (sync, async, streaming) against a real uvicorn server."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import MakeClient, Server

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]


def test_chat_completion_mentions_paris(server: Server, make_client: MakeClient) -> None:
    resp = make_client(server).chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40)  # type: ignore[arg-type]
    assert "Paris" in (resp.choices[0].message.content or "")
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_streaming_with_include_usage(server: Server, make_client: MakeClient) -> None:
    stream = make_client(server).chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_stream_helper_accumulates_the_message(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    with client.chat.completions.stream(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    assert "Paris" in (final.choices[0].message.content or "")


async def test_async_client(server: Server) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="sk-test", max_retries=0)
    resp = await client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40)  # type: ignore[arg-type]
    assert "Paris" in (resp.choices[0].message.content or "")
    pieces = []
    async for chunk in await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=40,
        stream=True,
    ):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == resp.choices[0].message.content
    await client.close()


def test_completions_and_models(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    resp = client.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=4)
    assert "Paris" in resp.choices[0].text
    assert resp.usage is not None and resp.usage.completion_tokens == 4
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_sdk_raises_typed_errors(server: Server, make_client: MakeClient) -> None:
    client = make_client(server)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)  # type: ignore[arg-type]
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 6000}])
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.chat.completions.create(model=MODEL, messages=QUESTION, function_call="auto")  # type: ignore[arg-type]
    assert unsupported.value.code == "unsupported_parameter"
    assert unsupported.value.param == "function_call"
    with pytest.raises(openai.AuthenticationError):
        make_client(server, key="wrong").models.list()
    # and the server still answers
    assert make_client(server).models.list().data
