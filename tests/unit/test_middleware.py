"""The ASGI middleware on scripted ASGI messages: the body limit (declared and streamed sizes),
and the disconnect watcher that cancels a non-streamed request whose client left."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio

from server.http.middleware import BodyLimitMiddleware, DisconnectMiddleware

Message = dict[str, Any]


def scope(headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers or []}


class Wire:
    """One connection: what the client sends, and what the server sent back."""

    def __init__(self, *messages: Message) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        for m in messages:
            self.incoming.put_nowait(m)
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def status(self) -> int:
        return int(next(m["status"] for m in self.sent if m["type"] == "http.response.start"))

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"))


async def echo_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    wire = Wire()  # nothing to read: the declared length alone must decide
    app = BodyLimitMiddleware(echo_body, max_bytes=10)
    await app(scope([(b"content-length", b"11")]), wire.receive, wire.send)
    assert wire.status() == 413
    assert wire.json()["error"]["type"] == "invalid_request_error"
    assert "10 bytes" in wire.json()["error"]["message"]


async def test_chunked_body_is_cut_off_once_it_grows_past_the_limit() -> None:
    chunks = [{"type": "http.request", "body": b"x" * 6, "more_body": True}] * 2
    wire = Wire(*chunks, {"type": "http.request", "body": b"never read", "more_body": False})
    await BodyLimitMiddleware(echo_body, max_bytes=10)(scope(), wire.receive, wire.send)
    assert wire.status() == 413
    assert wire.incoming.qsize() == 1, "the rest of an oversized upload is not buffered"


async def test_body_within_the_limit_reaches_the_app_whole() -> None:
    wire = Wire(
        {"type": "http.request", "body": b"hello ", "more_body": True},
        {"type": "http.request", "body": b"world", "more_body": False},
    )
    await BodyLimitMiddleware(echo_body, max_bytes=11)(scope(), wire.receive, wire.send)
    assert wire.status() == 200
    assert b"".join(m.get("body", b"") for m in wire.sent if m["type"] == "http.response.body") == b"hello world"


async def test_a_client_leaving_cancels_a_non_streamed_request() -> None:
    started, cancelled = anyio.Event(), anyio.Event()

    async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        started.set()
        try:
            await anyio.sleep(30)  # a long generation
        except BaseException:
            cancelled.set()
            raise

    wire = Wire({"type": "http.request", "body": b"{}", "more_body": False})
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(DisconnectMiddleware(slow_app), scope(), wire.receive, wire.send)
            await started.wait()
            wire.incoming.put_nowait({"type": "http.disconnect"})
            await cancelled.wait()
    assert wire.sent == []


async def test_a_disconnect_after_the_response_completed_cancels_nothing() -> None:
    finished = anyio.Event()

    async def quick_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        finished.set()

    wire = Wire({"type": "http.request", "body": b"{}", "more_body": False}, {"type": "http.disconnect"})
    with anyio.fail_after(5):
        await DisconnectMiddleware(quick_app)(scope(), wire.receive, wire.send)
    assert finished.is_set()
    assert wire.sent[-1]["body"] == b"done"
