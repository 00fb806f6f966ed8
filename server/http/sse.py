"""The one way a route answers with a server-sent event stream, whatever API's events it carries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Message, Send

from server.runtime.pool import ModelPool
from server.runtime.residency import Lease
from server.settings import Settings


class _EventStream(EventSourceResponse):
    """sse-starlette's response without its cancel scope around every send when no send timeout
    is set, a scope that then can never fire: its set-up (an async-library lookup, a scope entered
    and left) was an eighth of the server's work per streamed token."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


def sse_response(
    events: AsyncIterator[dict[str, Any]],
    settings: Settings,
    ping: Callable[[], ServerSentEvent] | None = None,
) -> EventSourceResponse:
    """``events``: dicts with ``data`` (and ``event`` for APIs that name their events). ``ping``:
    the keep-alive an API defines (default: an SSE comment, which every client skips)."""
    return _EventStream(
        events,
        ping=int(max(1, settings.sse_ping_seconds)),
        ping_message_factory=ping,
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        # On shutdown, sse-starlette would cut streams at once; let them finish within the grace.
        shutdown_grace_period=settings.shutdown_grace_s,
    )


async def leased(
    pool: ModelPool, model: str, keep_alive: float | None, respond: Callable[[Lease], Awaitable[Response]]
) -> Response:
    """Answer with the model held (loaded first if needed): a whole response releases it when
    done; a stream's events hold it (``Lease.hold``) and release it when the stream ends."""
    lease = await pool.acquire(model, keep_alive)
    handed_over = False
    try:
        response = await respond(lease)
        handed_over = isinstance(response, EventSourceResponse)
        return response
    finally:
        if not handed_over:
            lease.release()
