"""The one exception hierarchy. Backends translate native engine errors into these at their
boundary; ``server.http.errors`` maps each class to an HTTP status once."""

from __future__ import annotations

from pydantic import ValidationError


class QuantserveError(Exception):
    """Base class. ``message`` is safe to show to a client (no paths, no tracebacks)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(QuantserveError):
    """The request is well-formed JSON but asks for something impossible."""


class ContextLengthExceeded(InvalidRequest):
    """Prompt (plus requested completion) does not fit the model's context."""


class UnsupportedParameter(InvalidRequest):
    """A field OpenAI defines that this server or backend cannot honour."""


class ModelNotFound(QuantserveError):
    """The request names a model this server does not serve."""


class Overloaded(QuantserveError):
    """The model's queue is full; retry later."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueTimeout(Overloaded):
    """The request waited in the model's queue past its ``queue_timeout_s``; nothing was generated."""


class BackendUnavailable(QuantserveError):
    """The model exists but cannot serve now (loading, stopped, engine died)."""


class BackendStartupError(QuantserveError):
    """A model could not be loaded; raised at start-up with the cause and a remedy."""


class ConfigError(QuantserveError):
    """Settings that cannot work (unknown backend, bad options, missing file)."""


def field_problems(exc: ValidationError, *, prefix: str = "") -> str:
    """``loc: msg; ...`` from a pydantic error list, so a config typo names its field."""
    return "; ".join(
        f"{prefix}{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
    )
