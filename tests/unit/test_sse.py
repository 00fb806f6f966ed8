"""SSE framing and the fold, fed with chunk sequences (pure functions, no engine)."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backends.errors import Overloaded
from backends.types import GenerationChunk, Usage
from server.openai.choices import ChoiceState
from server.openai.responses import ResponseRenderer
from server.openai.streaming import Generation, fold, sse_events, start_all

USAGE = Usage(prompt_tokens=5, completion_tokens=3)


async def chunks(*items: GenerationChunk | Exception) -> AsyncIterator[GenerationChunk]:
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


def story() -> AsyncIterator[GenerationChunk]:
    return chunks(
        GenerationChunk("Hel", tokens=1),
        GenerationChunk("", tokens=1),  # a token that completes no character yet
        GenerationChunk("lo", tokens=1),
        GenerationChunk("", finish_reason="length", usage=USAGE),
    )


async def frames(shape: ResponseRenderer, source: AsyncIterator[GenerationChunk], include_usage: bool) -> list[Any]:
    gen = await Generation.start(source)
    out = []
    async for event in sse_events([gen], [ChoiceState(0)], shape, include_usage=include_usage):
        out.append(event["data"] if event["data"] == "[DONE]" else json.loads(event["data"]))
    return out


async def test_chat_stream_is_role_then_deltas_then_finish_then_usage_then_done() -> None:
    out = await frames(ResponseRenderer(id="c1", model="m", chat=True), story(), include_usage=True)
    assert out[-1] == "[DONE]"
    bodies = out[:-1]
    assert all(b["object"] == "chat.completion.chunk" and b["id"] == "c1" for b in bodies)
    assert bodies[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [b["choices"][0]["delta"].get("content") for b in bodies[1:3]] == ["Hel", "lo"]  # empty delta skipped
    assert bodies[3]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert all(b["usage"] is None for b in bodies[:4])
    assert bodies[4]["choices"] == []
    assert bodies[4]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert len(bodies) == 5


async def test_without_include_usage_there_is_no_usage_key_or_chunk() -> None:
    out = await frames(ResponseRenderer(id="c1", model="m", chat=True), story(), include_usage=False)
    assert all("usage" not in b for b in out[:-1])
    assert len(out) == 5  # role, 2 deltas, finish, [DONE]


async def test_completion_stream_has_text_choices_and_no_role_chunk() -> None:
    out = await frames(ResponseRenderer(id="x", model="m", chat=False), story(), include_usage=False)
    assert [b["choices"][0]["text"] for b in out[:-1]] == ["Hel", "lo", ""]
    assert out[-2]["choices"][0]["finish_reason"] == "length"
    assert all(b["object"] == "text_completion" for b in out[:-1])


async def test_error_after_first_token_becomes_one_error_event_then_done() -> None:
    source = chunks(GenerationChunk("a", tokens=1), RuntimeError("/secret/path exploded"))
    out = await frames(ResponseRenderer(id="c", model="m", chat=True), source, include_usage=False)
    assert out[-1] == "[DONE]"
    assert out[-2] == {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


async def test_error_before_first_token_propagates_so_http_status_survives() -> None:
    with pytest.raises(Overloaded):
        await Generation.start(chunks(Overloaded("full")))


async def test_fold_joins_deltas_into_one_response() -> None:
    body = await fold(
        [await Generation.start(story())], [ChoiceState(0)], ResponseRenderer(id="c", model="m", chat=True)
    )
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello", "refusal": None}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] == 8


async def test_closing_a_generation_closes_the_engine_stream() -> None:
    closed = []

    async def engine() -> AsyncIterator[GenerationChunk]:
        try:
            while True:
                yield GenerationChunk("x", tokens=1)
        finally:
            closed.append(True)

    gen = await Generation.start(engine())
    async for _ in gen.chunks():
        break
    await gen.close()
    assert closed == [True]


async def test_start_all_fails_fast_and_closes_the_other_choices() -> None:
    closed: list[str] = []

    async def stuck() -> AsyncIterator[GenerationChunk]:
        try:
            await asyncio.Event().wait()  # an admitted choice still in its prefill
            yield GenerationChunk("never")
        finally:
            closed.append("stuck")

    async def started() -> AsyncIterator[GenerationChunk]:
        try:
            yield GenerationChunk("a", tokens=1)
            await asyncio.Event().wait()
        finally:
            closed.append("started")

    async def refused() -> AsyncIterator[GenerationChunk]:
        await asyncio.sleep(0.01)
        raise Overloaded("queue full")
        yield GenerationChunk()  # pragma: no cover - makes this an async generator

    with pytest.raises(Overloaded):
        await asyncio.wait_for(start_all([stuck(), started(), refused()]), timeout=5)
    assert sorted(closed) == ["started", "stuck"]


async def test_line_breaks_beyond_cr_and_lf_are_escaped_so_line_splitting_clients_keep_events_whole() -> None:
    odd = "a\u2028b\u2029c\u0085d"
    source = chunks(GenerationChunk(odd, tokens=1), GenerationChunk("", finish_reason="stop", usage=USAGE))
    gen = await Generation.start(source)
    shape = ResponseRenderer(id="c1", model="m", chat=True)
    raw = [e["data"] async for e in sse_events([gen], [ChoiceState(0)], shape, include_usage=False)]
    stream = "".join(f"data: {r}\n\n" for r in raw)
    # What httpx's aiter_lines (str.splitlines) makes of the stream: every data line still whole.
    lines = [line for line in stream.splitlines() if line]
    assert len(lines) == len(raw)
    bodies = [json.loads(line[6:]) for line in lines if line != "data: [DONE]"]
    assert bodies[1]["choices"][0]["delta"]["content"] == odd
