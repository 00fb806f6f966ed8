"""Errors in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}`` with its statuses.

The exception -> status table stays the one in ``server.http.errors``; this only writes an entry the
way Anthropic's clients read it. It applies to the ``/v1/messages`` routes (``create_app``).
"""

from __future__ import annotations

from typing import Any

from server.http.errors import ErrorInfo, describe
from server.http.event_json import event_json

# Anthropic's error types by status; any other 5xx is its generic "api_error".
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# A full queue, or a wait in it past its limit, is the server's capacity running out: Anthropic
# answers that with 529 overloaded_error (its 429 is a per-key rate limit), and its clients retry it.
_OVERLOADED_CODES = frozenset({"overloaded", "queue_timeout"})


def anthropic_shape(info: ErrorInfo) -> tuple[int, dict[str, Any]]:
    status = 529 if info.code in _OVERLOADED_CODES else info.status
    type_ = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    message = f"{info.param}: {info.message}" if info.param and info.param not in info.message else info.message
    return status, {"type": "error", "error": {"type": type_, "message": message}}


def error_event(exc: BaseException) -> dict[str, str]:
    """A failure after the 200 went out: Anthropic's ``error`` event, which its SDKs raise."""
    _, body = anthropic_shape(describe(exc))
    return {"event": "error", "data": event_json(body)}
