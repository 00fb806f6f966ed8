"""``GET /v1/models`` and ``/v1/models/{id}``: the served models as OpenAI model cards."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from backends.base import Backend
from server.http.deps import get_pool
from server.runtime.pool import ModelPool

router = APIRouter(prefix="/v1")

Pool = Annotated[ModelPool, Depends(get_pool)]


def _model_card(backend: Backend, created: int) -> dict[str, Any]:
    info = backend.info()
    return {
        "id": info.model_id,
        "object": "model",
        "created": created,
        "owned_by": "quantserve",
        "context_length": info.context_length,
        "backend": info.backend,
        "format": info.format,
        "quantization": info.quantization,
    }


@router.get("/models")
async def list_models(pool: Pool) -> dict[str, Any]:
    created = int(time.time())
    return {"object": "list", "data": [_model_card(b, created) for b in pool]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, pool: Pool) -> dict[str, Any]:
    return _model_card(pool.get(model_id), int(time.time()))
