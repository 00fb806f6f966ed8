"""One generation path for both response modes: SSE frames, or a fold into one object."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio

from backends.types import GenerationChunk, Usage
from server.errors import sse_error_payload
from server.responses import Shape

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
            await _close(chunks)
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
        await _close(self._rest)


async def _close(chunks: AsyncIterator[GenerationChunk]) -> None:
    # Shielded: when the client has gone, anyio keeps re-cancelling this task, and the engine
    # must still get to free the request's slot.
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()


async def sse_events(gen: Generation, shape: Shape, *, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """role chunk -> content deltas -> finish chunk -> optional usage chunk -> [DONE]."""

    def frame(body: dict[str, Any]) -> dict[str, Any]:
        return {"data": json.dumps(body, ensure_ascii=False)}

    try:
        if shape.chat:
            yield frame(shape.chunk(role=True, include_usage=include_usage))
        usage: Usage | None = None
        async for chunk in gen.chunks():
            if chunk.text:
                yield frame(shape.chunk(chunk.text, include_usage=include_usage))
            if chunk.finish_reason is not None:
                usage = chunk.usage
                yield frame(shape.chunk(finish_reason=chunk.finish_reason, include_usage=include_usage))
        if include_usage:
            yield frame(shape.usage_chunk(usage))
    except Exception as exc:
        # The 200 is already on the wire: report the failure in-band, then end the stream.
        log.exception("stream %s failed after its first token", shape.id)
        yield {"data": sse_error_payload(exc)}
    finally:
        await gen.close()
    yield {"data": DONE}


async def fold(gen: Generation, shape: Shape) -> dict[str, Any]:
    """A non-streamed response is the same stream, collected."""
    parts: list[str] = []
    finish: str | None = None
    usage: Usage | None = None
    try:
        async for chunk in gen.chunks():
            parts.append(chunk.text)
            if chunk.finish_reason is not None:
                finish, usage = chunk.finish_reason, chunk.usage
    finally:
        await gen.close()
    return shape.full("".join(parts), finish, usage)
