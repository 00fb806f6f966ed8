"""/v1/embeddings (OpenAI's shape) on any backend that can; one that cannot answers 400
``unsupported_parameter`` with the reason (``Backend`` defaults)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from backends.base import Backend
from backends.embeddings import EmbeddingRequest
from server.http.deps import RequestId, get_pool
from server.http.errors import classify
from server.openai.embedding_protocol import EmbeddingBody
from server.runtime.deadline import within
from server.runtime.metrics import Metrics, get_metrics
from server.runtime.pool import ModelPool

router = APIRouter()

Pool = Annotated[ModelPool, Depends(get_pool)]
AppMetrics = Annotated[Metrics, Depends(get_metrics)]


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingBody, pool: Pool, metrics: AppMetrics, request_id: RequestId) -> JSONResponse:
    # Loads the model when it is not loaded; 503 naming why while its engine is down.
    lease = await pool.acquire(body.model, body.keep_alive)
    try:
        return await _embed(body, lease.backend, pool, metrics, request_id)
    finally:
        lease.release()


async def _embed(
    body: EmbeddingBody, backend: Backend, pool: ModelPool, metrics: Metrics, request_id: str
) -> JSONResponse:
    limits = pool.limits(body.model)
    req = EmbeddingRequest(
        request_id=f"embd-{request_id}",
        inputs=body.inputs(),
        dimensions=body.dimensions,
        max_input_tokens=limits.max_prompt_tokens,
    )
    labels = (backend.spec.id, backend.name)
    try:
        result = await within(backend.embed(req), limits.request_timeout_s)
    except Exception as exc:
        status = classify(exc)[0]
        metrics.requests.labels(*labels, "embeddings", "invalid_request" if status < 500 else "error", "none").inc()
        raise
    metrics.requests.labels(*labels, "embeddings", "ok", "none").inc()
    metrics.prompt_tokens.labels(*labels).inc(result.prompt_tokens)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(vector, body.encoding_format)}
        for i, vector in enumerate(result.vectors)
    ]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    # JSONResponse directly: FastAPI's encoder walks every float of a big batch in Python.
    return JSONResponse({"object": "list", "data": data, "model": body.model, "usage": usage})


def _encode(vector: Sequence[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return list(vector)
    # Little-endian float32, what OpenAI sends and its SDK decodes (numpy.frombuffer(..., "float32")).
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
