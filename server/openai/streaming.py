"""One generation path for both response modes: SSE frames, or a fold into one object."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio

from backends.types import GenerationChunk
from server.http.errors import sse_error_payload
from server.http.event_json import event_json
from server.openai.choices import ChoiceState, total_usage
from server.openai.responses import ResponseRenderer

log = logging.getLogger(__name__)

DONE = "[DONE]"


class Generation:
    """A started generation whose first chunk has already arrived.

    Pulling the first chunk before answering means errors found before the first token
    (queue full, prompt too long) still get their real HTTP status instead of a 200.
    """

    def __init__(self, first: GenerationChunk, rest: AsyncIterator[GenerationChunk]) -> None:
        self._first: GenerationChunk | None = first
        self._rest = rest

    @classmethod
    async def start(cls, chunks: AsyncIterator[GenerationChunk]) -> Generation:
        try:
            first = await anext(chunks)
        except BaseException:
            await close_stream(chunks)
            raise
        return cls(first, chunks)

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
            if first.finish_reason is not None:
                return
        async for chunk in self._rest:
            yield chunk
            if chunk.finish_reason is not None:
                return

    async def close(self) -> None:
        await close_stream(self._rest)


async def start_all(streams: Sequence[AsyncIterator[GenerationChunk]]) -> list[Generation]:
    """Start every choice's generation at once (so they are batched together, not one after
    another). The first failure before a first chunk (e.g. queue full) cancels the others at once
    and is raised: the client gets its real status now, not after the admitted choices' prefill."""
    if len(streams) == 1:
        return [await Generation.start(streams[0])]
    tasks = [asyncio.ensure_future(Generation.start(s)) for s in streams]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:  # this request itself was cancelled (client gone)
        await _abandon(tasks)
        raise
    failure = next((t.exception() for t in done if not t.cancelled() and t.exception() is not None), None)
    if failure is None:
        return [t.result() for t in tasks]
    await _abandon(tasks)
    raise failure


async def _abandon(tasks: Sequence[asyncio.Future[Generation]]) -> None:
    """Cancel choices still starting (Generation.start closes their streams) and close started ones."""
    for task in tasks:
        task.cancel()
    with anyio.CancelScope(shield=True):
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is None:
                await task.result().close()


async def merged(gens: Sequence[Generation]) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """(choice index, chunk) from every generation, in arrival order.

    One choice needs no helper tasks. Several are each pumped by a task into one queue; closing
    this iterator cancels the pumps (which closes their engine streams) before returning.
    """
    if len(gens) == 1:
        try:
            async for chunk in gens[0].chunks():
                yield 0, chunk
        finally:
            await gens[0].close()
        return
    queue: asyncio.Queue[tuple[int, GenerationChunk | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, gen: Generation) -> None:
        try:
            async for chunk in gen.chunks():
                queue.put_nowait((i, chunk))
        except Exception as exc:
            queue.put_nowait((i, exc))
        finally:
            queue.put_nowait((i, None))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(gens)]
    try:
        open_ = len(gens)
        while open_:
            i, item = await queue.get()
            if item is None:
                open_ -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*tasks, return_exceptions=True)
            for gen in gens:
                await gen.close()


async def close_stream(chunks: AsyncIterator[Any]) -> None:
    # Shielded: when the client has gone, anyio keeps re-cancelling this task, and the engine
    # must still get to free the request's slot.
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()


async def sse_events(
    gens: Sequence[Generation],
    states: Sequence[ChoiceState],
    shape: ResponseRenderer,
    *,
    include_usage: bool,
    n: int = 1,
) -> AsyncIterator[dict[str, Any]]:
    """role chunks -> deltas (content, tool calls) -> finish chunks -> optional usage -> [DONE]."""

    def frame(body: dict[str, Any]) -> dict[str, Any]:
        return {"data": event_json(body)}

    stream = merged(gens)
    try:
        if shape.chat:
            for state in states:
                yield frame(shape.role_chunk(state.index, include_usage=include_usage))
        async for i, chunk in stream:
            state = states[i]
            for body in shape.delta_chunks(state, state.feed(chunk), include_usage=include_usage):
                yield frame(body)
        if include_usage:
            yield frame(shape.usage_chunk(total_usage(list(states), n)))
    except Exception as exc:
        # The 200 is already on the wire: report the failure in-band, then end the stream.
        log.exception("stream %s failed after its first token", shape.id)
        yield {"data": sse_error_payload(exc)}
    finally:
        await close_stream(stream)
    yield {"data": DONE}


async def fold(
    gens: Sequence[Generation], states: Sequence[ChoiceState], shape: ResponseRenderer, n: int = 1
) -> dict[str, Any]:
    """A non-streamed response is the same streams, collected."""
    stream = merged(gens)
    try:
        async for i, chunk in stream:
            states[i].feed(chunk)
    finally:
        await close_stream(stream)
    return shape.full(states, total_usage(list(states), n))
