"""Dependency getters: routes reach app-scoped objects through these, never through globals."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request

from server.runtime.pool import ModelPool
from server.settings import Settings


def get_pool(request: Request) -> ModelPool:
    pool: ModelPool = request.app.state.pool
    return pool


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_request_id(request: Request) -> str:
    """The id a response, its engine request and every log line about it share, so a request can
    be followed from the client's X-Request-ID through the engine. A client's own id is not
    trusted to be unique (engines key running requests by id), so it gets a short suffix."""
    rid = str(request.state.request_id)
    return f"{rid}-{uuid.uuid4().hex[:8]}" if request.state.request_id_given else rid


RequestId = Annotated[str, Depends(get_request_id)]
