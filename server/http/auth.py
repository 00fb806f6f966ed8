"""API keys on every route but the open ones, compared in constant time.

A pure ASGI middleware rather than a route dependency, so nothing is forgotten: /v1, /metrics,
/docs, even unknown paths need a key when keys are set.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from server.http.errors import AuthenticationError, send_error


def presented_key(authorization: str, x_api_key: str) -> str | None:
    """The key a client sent: ``Authorization: Bearer KEY`` (OpenAI) or ``x-api-key: KEY`` (Anthropic)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return x_api_key.strip() or None


def check_key(authorization: str, keys: tuple[str, ...], x_api_key: str = "") -> None:
    key = presented_key(authorization, x_api_key)
    if key is None:
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' or 'x-api-key: YOUR_KEY'."
        )
    presented = key.encode()
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
        headers = dict(scope["headers"])
        try:
            check_key(
                headers.get(b"authorization", b"").decode("latin-1"),
                self.keys,
                headers.get(b"x-api-key", b"").decode("latin-1"),
            )
        except AuthenticationError as exc:
            await send_error(scope, send, exc)
            return
        await self.app(scope, receive, send)
