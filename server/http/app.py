"""The application factory: everything app-scoped is built here and kept on ``app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from backends.base import Backend
from server.http.auth import ApiKeyMiddleware
from server.http.errors import install_error_handlers
from server.http.middleware import BodyLimitMiddleware, DisconnectMiddleware, RequestIdMiddleware
from server.routes import completions, embeddings, health, metrics, models, playground, tokenize
from server.runtime.metrics import Metrics
from server.runtime.pool import ModelPool
from server.runtime.residency import Resident
from server.settings import Settings


def create_app(settings: Settings, pool: ModelPool | None = None) -> FastAPI:
    """Build the app. Given a ``pool`` whose models are already started (the CLI does that, so a
    load failure is a clean start-up error), the app only stops it on shutdown; without one,
    the lifespan builds and starts the pool itself (tests, ``uvicorn server.http.app:...``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = pool is None
        app.state.pool = pool if pool is not None else ModelPool.from_settings(settings)
        if owned:
            await app.state.pool.start_all()
        try:
            yield
        finally:
            await app.state.pool.stop_all()

    app = FastAPI(title="quantserve", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings

    def served() -> Iterable[Backend]:
        # Read at scrape time: the pool exists once the lifespan has started.
        return getattr(app.state, "pool", None) or ()

    def residents() -> Iterable[Resident]:
        current = getattr(app.state, "pool", None)
        return current.residents() if current is not None else ()

    app.state.metrics = Metrics(served, residents)
    install_error_handlers(app)
    # Added innermost first: CORS -> request id -> API key -> body limit -> disconnect -> routes.
    app.add_middleware(DisconnectMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    open_paths = settings.open_paths + (playground.PLAYGROUND_PATHS if settings.playground else ())
    app.add_middleware(ApiKeyMiddleware, keys=settings.all_api_keys(), open_paths=open_paths)
    app.add_middleware(RequestIdMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    for routes in (health, completions, models, embeddings, tokenize, metrics):
        app.include_router(routes.router)
    if settings.playground:
        app.include_router(playground.router)
    return app
