"""API keys on every route but the open ones, compared in constant time.

A pure ASGI middleware rather than a route dependency, so nothing is forgotten: /v1, /metrics,
/docs, even unknown paths need a key when keys are set.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from server.http.errors import AuthenticationError, send_error


def check_key(authorization: str, keys: tuple[str, ...]) -> None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.")
    presented = token.strip().encode()
    # Check every key, so the time taken does not reveal which one came close.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key.encode())
    if not matched:
        raise AuthenticationError("Incorrect API key provided.")


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, *, keys: tuple[str, ...], open_paths: tuple[str, ...]) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = frozenset(p.rstrip("/") or "/" for p in open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "").rstrip("/") or "/"
        if scope["type"] != "http" or not self.keys or path in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        try:
            check_key(header, self.keys)
        except AuthenticationError as exc:
            await send_error(send, exc)
            return
        await self.app(scope, receive, send)
