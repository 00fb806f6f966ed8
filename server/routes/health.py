"""Liveness and readiness for orchestrators (no API key: probes carry none)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from server.http.deps import get_pool
from server.runtime.pool import ModelPool

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(pool: Annotated[ModelPool, Depends(get_pool)]) -> JSONResponse:
    states = await pool.states()
    ok = all(s.ready for s in states)
    body = {"status": "ready" if ok else "not_ready", "models": [asdict(s) for s in states]}
    return JSONResponse(body, status_code=200 if ok else 503)
