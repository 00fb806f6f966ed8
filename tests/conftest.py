"""Shared fixtures: the real default model, settings and in-process apps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from server.http.app import create_app
from server.runtime.model_store import DEFAULT_MODEL_ID, ensure_default_model
from server.settings import DEFAULT_MODELS_DIR, ModelConfig, Settings, load_settings

if TYPE_CHECKING:
    from tests.vllm_engines import SharedEngines

MODEL_ID = DEFAULT_MODEL_ID


class AppClient(httpx.AsyncClient):
    """An httpx client bound in process to one app; ``app`` gives tests its state (pool, metrics)."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=120)
        self.app = app


ClientFactory = Callable[..., AbstractAsyncContextManager[AppClient]]


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF (fetched once into the cache)."""
    return ensure_default_model(DEFAULT_MODELS_DIR)


@pytest.fixture(scope="session")
def make_settings(model_path: Path) -> Callable[..., Settings]:
    def make(options: dict[str, Any] | None = None, **overrides: Any) -> Settings:
        model = ModelConfig(id=MODEL_ID, path=model_path, options=options or {"n_ctx": 1024})
        overrides.setdefault("models", (model,))
        return load_settings(None, **overrides)

    return make


@pytest.fixture(scope="session")
def app_client(make_settings: Callable[..., Settings]) -> ClientFactory:
    """``async with app_client(settings) as client``: an in-process app with its lifespan running."""

    @asynccontextmanager
    async def open_client(settings: Settings | None = None) -> AsyncIterator[AppClient]:
        app = create_app(settings or make_settings())
        async with app.router.lifespan_context(app), AppClient(app) as client:
            yield client

    return open_client


@pytest.fixture(scope="session")
async def client(
    app_client: ClientFactory,
) -> AsyncIterator[AppClient]:
    """One shared app on the real model for the API tests (loading takes under a second)."""
    async with app_client() as c:
        yield c


@pytest.fixture(scope="session")
async def vllm_engines() -> AsyncIterator[SharedEngines]:
    """The vLLM engines shared by the contract, vLLM and tokenizer suites (tests/vllm_engines.py)."""
    from tests.vllm_engines import SharedEngines

    engines = SharedEngines()
    try:
        yield engines
    finally:
        await engines.close()
