"""Dependency getters: routes reach app-scoped objects through these, never through globals."""

from __future__ import annotations

from fastapi import Request

from server.runtime.pool import ModelPool
from server.settings import Settings


def get_pool(request: Request) -> ModelPool:
    pool: ModelPool = request.app.state.pool
    return pool


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
