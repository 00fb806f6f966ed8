"""The one place exceptions become HTTP responses: an OpenAI error object with the right status."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

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


# class -> (status, error.type, error.code); looked up along the MRO so subclasses inherit.
ERROR_TABLE: dict[type[QuantserveError], tuple[int, str, str | None]] = {
    ContextLengthExceeded: (400, "invalid_request_error", "context_length_exceeded"),
    UnsupportedParameter: (400, "invalid_request_error", "unsupported_parameter"),
    InvalidRequest: (400, "invalid_request_error", "invalid_value"),
    AuthenticationError: (401, "invalid_request_error", "invalid_api_key"),
    ModelNotFound: (404, "invalid_request_error", "model_not_found"),
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


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def classify(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and extra headers for any exception (unknown ones become a generic 500)."""
    if isinstance(exc, QuantserveError):
        for cls in type(exc).__mro__:
            if cls in ERROR_TABLE:
                status, type_, code = ERROR_TABLE[cls]
                headers = {}
                if isinstance(exc, Overloaded):
                    headers["Retry-After"] = str(max(1, round(exc.retry_after)))
                if isinstance(exc, AuthenticationError):
                    headers["WWW-Authenticate"] = "Bearer"
                return status, error_body(exc.message, type_, exc.param, code), headers
    return 500, error_body("The server had an error while processing your request.", "server_error"), {}


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


def install_error_handlers(app: FastAPI) -> None:
    async def on_quantserve_error(request: Request, exc: Exception) -> JSONResponse:
        status, body, headers = classify(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param, code = describe_validation(exc)
        return JSONResponse(error_body(message, "invalid_request_error", param, code), status_code=400)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(
            error_body(str(exc.detail), type_, None, code), status_code=exc.status_code, headers=exc.headers
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error in request %s", request.state.__dict__.get("request_id", "-"), exc_info=exc)
        status, body, headers = classify(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    app.add_exception_handler(QuantserveError, on_quantserve_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


async def send_error(send: Send, exc: QuantserveError) -> None:
    """For ASGI middlewares, which run outside the app's exception handlers."""
    status, body, headers = classify(exc)
    raw = json.dumps(body).encode()
    response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    response_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": raw})


def sse_error_payload(exc: BaseException) -> str:
    """An error after the 200 went out: one SSE data frame holding the OpenAI error object."""
    _, body, _ = classify(exc)
    return json.dumps(body)
