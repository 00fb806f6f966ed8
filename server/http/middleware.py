"""Request ids: taken from X-Request-ID when sane, else made; echoed on every response."""

from __future__ import annotations

import asyncio
import re
import uuid

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.http.errors import PayloadTooLarge, send_error

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware) so streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["request_id_given"] = request_id == given

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413 before any route parses them.

    Checked against Content-Length up front and again while the body streams in (chunked
    uploads carry no length), so a huge upload is cut off, not buffered.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break  # client went away before sending the body
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for http.disconnect

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await send_error(
            scope, send, PayloadTooLarge(f"Request body is larger than the {self.max_bytes} bytes this server accepts.")
        )


class DisconnectMiddleware:
    """Cancel a request's work when its client goes away before the response is complete.

    Starlette notices a departed client only while it streams (sse-starlette listens for it); a
    non-streamed completion would otherwise generate to the end for nobody, holding its slot.
    Once the body is read, the only message a client can still send is ``http.disconnect``: a
    watcher task waits for it and cancels the app, whose cancellation closes the engine stream
    and frees the slot within one engine step. The app sees the disconnect too, through the
    receive it is given.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        pending: list[Message] = []
        while True:  # the body (buffered by BodyLimitMiddleware, outside us)
            message = await receive()
            pending.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        gone = anyio.Event()
        complete = False

        async def app_receive() -> Message:
            if pending:
                return pending.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def tracking_send(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        with anyio.CancelScope() as work:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()
                if not complete:
                    work.cancel()

            watcher = None if pending[-1]["type"] == "http.disconnect" else asyncio.create_task(watch())
            try:
                await self.app(scope, app_receive, tracking_send)
            finally:
                if watcher is not None:
                    watcher.cancel()
