"""A whole-request time limit around a backend stream or a single awaited result.

The limit covers queueing and generation. Hit before the first chunk, the client gets a 504;
hit mid-stream, sse_events turns it into one in-stream error event. Either way the engine
stream is closed, which cancels the request's work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import anyio

from backends.types import GenerationChunk
from server.http.errors import RequestTimeout

T = TypeVar("T")


def _timeout(seconds: float) -> RequestTimeout:
    return RequestTimeout(f"The request did not finish within its {seconds:g} s limit.")


async def with_deadline(
    chunks: AsyncIterator[GenerationChunk], seconds: float | None
) -> AsyncIterator[GenerationChunk]:
    if seconds is None:
        async for chunk in chunks:
            yield chunk
        return
    deadline = anyio.current_time() + seconds
    try:
        while True:
            # The cancel scope wraps only the wait for the next chunk, never a yield.
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as scope:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
            if scope.cancelled_caught:
                raise _timeout(seconds)
            yield chunk
    finally:
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
