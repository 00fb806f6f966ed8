"""A whole-request time limit around a backend stream or a single awaited result.

The limit covers queueing and generation. Hit before the first chunk, the client gets a 504;
hit mid-stream, sse_events turns it into one in-stream error event. Either way the engine
stream is closed, which cancels the request's work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import anyio

from backends.types import GenerationChunk
from server.http.errors import RequestTimeout

T = TypeVar("T")


def _timeout(seconds: float) -> RequestTimeout:
    return RequestTimeout(f"The request did not finish within its {seconds:g} s limit.")


class _Alarm:
    """One timer for a whole stream: at the deadline it cancels the task waiting for the next chunk.

    A cancel scope per chunk (what ``anyio.move_on_after`` around each wait would be) costs a
    timer, an async-library lookup and a scope enter/exit for every token: a tenth of the
    server's work per token in a profile. Here each wait costs two flag stores."""

    __slots__ = ("fired", "rang", "waiting")

    def __init__(self) -> None:
        self.fired = False  # the deadline has passed
        self.waiting: asyncio.Task[object] | None = None  # the task waiting for a chunk, if any
        self.rang = False  # this alarm cancelled ``waiting``

    def fire(self) -> None:
        self.fired = True
        if self.waiting is not None:
            self.rang = True
            self.waiting.cancel()


async def with_deadline(
    chunks: AsyncIterator[GenerationChunk], seconds: float | None
) -> AsyncIterator[GenerationChunk]:
    if seconds is None:
        async for chunk in chunks:
            yield chunk
        return
    loop = asyncio.get_running_loop()
    alarm = _Alarm()
    timer = loop.call_at(loop.time() + seconds, alarm.fire)
    try:
        while not alarm.fired:
            # Only the wait for the next chunk is guarded, never a yield: the consumer's own
            # work between chunks is not interrupted. The task is looked up per wait because
            # the first chunk may be awaited by another task than the rest.
            alarm.waiting = asyncio.current_task()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                task = alarm.waiting
                # Ours alone (nobody else also cancelled the task, e.g. a client gone): a timeout.
                if alarm.rang and task is not None and task.uncancel() == 0:
                    raise _timeout(seconds) from None
                raise
            finally:
                alarm.waiting = None
            yield chunk
        raise _timeout(seconds)
    finally:
        timer.cancel()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()


async def within(work: Awaitable[T], seconds: float | None) -> T:
    """The same limit around one awaited result (embeddings); past it the work is cancelled."""
    if seconds is None:
        return await work
    with anyio.move_on_after(seconds):
        return await work
    raise _timeout(seconds)
