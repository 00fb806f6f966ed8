"""A whole-request time limit around a backend stream.

The limit covers queueing and generation. Hit before the first chunk, the client gets a 504;
hit mid-stream, sse_events turns it into one in-stream error event. Either way the engine
stream is closed, which cancels the request's work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from backends.types import GenerationChunk
from server.http.errors import RequestTimeout


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
                raise RequestTimeout(f"The request did not finish within its {seconds:g} s limit.")
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()
