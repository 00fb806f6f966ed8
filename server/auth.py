"""Optional API keys on the /v1 routes, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from server.errors import AuthenticationError


def require_api_key(request: Request) -> None:
    keys: tuple[str, ...] = request.app.state.settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.")
    presented = token.strip().encode()
    # Check every key, so the time taken does not reveal which one came close.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key.encode())
    if not matched:
        raise AuthenticationError("Incorrect API key provided.")
