"""The one place exceptions become HTTP responses.

``describe`` maps any exception to an ``ErrorInfo`` (status, OpenAI type and code, message) through
one table. How that is written on the wire is the API's: the OpenAI error object by default; a path
prefix may name another shape (``app.state.error_shapes``, set in ``create_app``), which keeps the
status and headers of the table unless its API has its own statuses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

from backends.errors import (
    BackendStartupError,
    BackendUnavailable,
    ConfigError,
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    QuantserveError,
    QueueTimeout,
    UnsupportedParameter,
)

log = logging.getLogger(__name__)


class AuthenticationError(QuantserveError):
    """Missing or wrong API key."""


class PayloadTooLarge(QuantserveError):
    """The request body is larger than the server accepts."""


class RequestTimeout(QuantserveError):
    """The request ran past its time limit (queueing included)."""


class NotFound(QuantserveError):
    """A stored object the request names (e.g. a response id) does not exist (or was evicted)."""


# class -> (status, error.type, error.code); looked up along the MRO so subclasses inherit.
ERROR_TABLE: dict[type[QuantserveError], tuple[int, str, str | None]] = {
    ContextLengthExceeded: (400, "invalid_request_error", "context_length_exceeded"),
    UnsupportedParameter: (400, "invalid_request_error", "unsupported_parameter"),
    InvalidRequest: (400, "invalid_request_error", "invalid_value"),
    AuthenticationError: (401, "invalid_request_error", "invalid_api_key"),
    ModelNotFound: (404, "invalid_request_error", "model_not_found"),
    NotFound: (404, "invalid_request_error", "not_found"),
    PayloadTooLarge: (413, "invalid_request_error", "request_too_large"),
    Overloaded: (429, "rate_limit_error", "overloaded"),
    # 503, not 429: the model was saturated for too long (a server condition, not the client's
    # rate); RFC 9110 gives 503 + Retry-After for temporary overload, as OpenAI does for an
    # overloaded engine. Nothing was generated, so a retry is safe.
    QueueTimeout: (503, "server_error", "queue_timeout"),
    BackendUnavailable: (503, "server_error", "backend_unavailable"),
    RequestTimeout: (504, "server_error", "timeout"),
    BackendStartupError: (503, "server_error", "backend_unavailable"),
    ConfigError: (500, "server_error", None),
}


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """One error, before any API writes it: the status and the OpenAI ``type``/``code`` of the table."""

    status: int
    type: str
    message: str
    param: str | None = None
    code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


# An API's way of writing an error: the status it answers with and the JSON body.
ErrorShape = Callable[[ErrorInfo], tuple[int, dict[str, Any]]]


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def openai_shape(info: ErrorInfo) -> tuple[int, dict[str, Any]]:
    return info.status, error_body(info.message, info.type, info.param, info.code)


def describe(exc: BaseException) -> ErrorInfo:
    """The table's entry for any exception (unknown ones become a generic 500 that leaks nothing)."""
    if isinstance(exc, QuantserveError):
        for cls in type(exc).__mro__:
            if cls in ERROR_TABLE:
                status, type_, code = ERROR_TABLE[cls]
                headers = {}
                if isinstance(exc, Overloaded):
                    headers["Retry-After"] = str(max(1, round(exc.retry_after)))
                if isinstance(exc, AuthenticationError):
                    headers["WWW-Authenticate"] = "Bearer"
                return ErrorInfo(status, type_, exc.message, exc.param, code, headers)
    return ErrorInfo(500, "server_error", "The server had an error while processing your request.")


def classify(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, OpenAI body and extra headers for any exception."""
    info = describe(exc)
    status, body = openai_shape(info)
    return status, body, dict(info.headers)


def shape_for(scope: Scope) -> ErrorShape:
    """The error shape of the API a request's path belongs to (OpenAI's unless a prefix says otherwise)."""
    app = scope.get("app")
    shapes: tuple[tuple[str, ErrorShape], ...] = getattr(getattr(app, "state", None), "error_shapes", ())
    path = str(scope.get("path", ""))
    for prefix, shape in shapes:
        if path == prefix or path.startswith(prefix + "/"):
            return shape
    return openai_shape


def error_response(scope: Scope, info: ErrorInfo) -> JSONResponse:
    status, body = shape_for(scope)(info)
    return JSONResponse(body, status_code=status, headers=dict(info.headers))


# Pydantic puts the union member it tried into the location ("stop.str", "content.list[TextPart]");
# a client needs the field's own path.
_UNION_MEMBERS = {"str", "int", "float", "bool", "none", "list", "dict"}


def _param_from_loc(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    parts = [p for p in parts if p not in _UNION_MEMBERS and "[" not in p]
    return ".".join(parts) or None


def describe_validation(exc: RequestValidationError) -> tuple[str, str | None, str]:
    """One readable message built from the error list (never ``str(exc)``), its param and code."""
    errors = exc.errors()
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    if first["type"] in {"json_invalid", "json_type"}:
        return "We could not parse the JSON body of your request. Send valid JSON.", None, "invalid_json"
    messages = []
    for err in errors[:5]:
        param = _param_from_loc(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            messages.append(f"Unrecognized request argument supplied: {param}")
        elif err["type"] == "missing":
            messages.append(f"Missing required parameter: '{param}'.")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            messages.append(f"Invalid value for '{param}': {msg}" if param else msg)
    return " ".join(messages), _param_from_loc(tuple(first["loc"])), "invalid_value"


def install_error_handlers(app: FastAPI, shapes: tuple[tuple[str, ErrorShape], ...] = ()) -> None:
    """``shapes``: (path prefix, shape) for APIs whose errors are not OpenAI's."""
    app.state.error_shapes = shapes

    async def on_quantserve_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request.scope, describe(exc))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param, code = describe_validation(exc)
        return error_response(request.scope, ErrorInfo(400, "invalid_request_error", message, param, code))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        info = ErrorInfo(exc.status_code, type_, str(exc.detail), None, code, exc.headers or {})
        return error_response(request.scope, info)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error in request %s", request.state.__dict__.get("request_id", "-"), exc_info=exc)
        return error_response(request.scope, describe(exc))

    app.add_exception_handler(QuantserveError, on_quantserve_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


async def send_error(scope: Scope, send: Send, exc: QuantserveError) -> None:
    """For ASGI middlewares, which run outside the app's exception handlers."""
    info = describe(exc)
    status, body = shape_for(scope)(info)
    raw = json.dumps(body).encode()
    response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    response_headers += [(k.lower().encode(), v.encode()) for k, v in info.headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": raw})


def sse_error_payload(exc: BaseException) -> str:
    """An error after the 200 went out: one SSE data frame holding the OpenAI error object."""
    _, body, _ = classify(exc)
    return json.dumps(body)
