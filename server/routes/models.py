"""``GET /v1/models`` and ``/v1/models/{id}``: every served model as an OpenAI model card, with its
residency (``loaded``, ``loading``, ``available``); ``POST /v1/models/{id}/load|unload`` for operators."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from server.http.deps import get_pool
from server.runtime.keep_alive import render_keep_alive
from server.runtime.pool import ModelPool
from server.runtime.residency import Resident

router = APIRouter(prefix="/v1")

Pool = Annotated[ModelPool, Depends(get_pool)]


def _model_card(resident: Resident, created: int) -> dict[str, Any]:
    info = resident.backend.info()
    now = time.monotonic()
    stats = resident.backend.stats()
    loaded = resident.state == "loaded"
    return {
        "id": info.model_id,
        "object": "model",
        "created": created,
        "owned_by": "quantserve",
        "context_length": info.context_length,
        "backend": info.backend,
        "format": info.format,
        "quantization": info.quantization,
        "state": resident.state,
        "status": {
            "state": resident.state,
            "memory_bytes": resident.memory() or None,  # the planner's estimate (weights + KV cache)
            "running": stats.running,
            "waiting": stats.waiting + resident.waiting,
            "in_use": resident.in_use,
            "idle_s": None if not loaded else resident.idle_s(now),
            "keep_alive_s": render_keep_alive(resident.keep_alive),
            "expires_in_s": resident.expires_in(now),
            "last_load_s": resident.last_load_s,
            "load_error": resident.load_error,
        },
    }


@router.get("/models")
async def list_models(pool: Pool) -> dict[str, Any]:
    created = int(time.time())
    return {"object": "list", "data": [_model_card(r, created) for r in pool.residents()]}


@router.post("/models/{model_id:path}/load")
async def load_model(model_id: str, pool: Pool) -> dict[str, Any]:
    """Load now (making room as a request would); answers once it is loaded."""
    return _model_card(await pool.load(model_id), int(time.time()))


@router.post("/models/{model_id:path}/unload")
async def unload_model(model_id: str, pool: Pool) -> dict[str, Any]:
    """Unload now; a model with requests in flight unloads as soon as they finish."""
    return _model_card(await pool.unload(model_id), int(time.time()))


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, pool: Pool) -> dict[str, Any]:
    return _model_card(pool.resident(model_id), int(time.time()))
