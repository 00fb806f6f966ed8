"""/v1/embeddings (OpenAI's shape) and /tokenize, /detokenize (vLLM's), on any backend that can;
one that cannot answers 400 ``unsupported_parameter`` with the reason (``Backend`` defaults)."""

from __future__ import annotations

import base64
import struct
import uuid
from collections.abc import Awaitable, Sequence
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from backends.base import Backend
from backends.embeddings import EmbeddingRequest, TokenizeRequest
from backends.errors import InvalidRequest
from server.deps import get_pool, get_settings
from server.errors import RequestTimeout, classify
from server.metrics import Metrics, get_metrics
from server.pool import ModelPool
from server.protocol import ChatCompletionRequest
from server.protocol_extra import DetokenizeBody, EmbeddingBody, TokenizeBody
from server.settings import Settings
from server.translate import chat_request

router = APIRouter()

Pool = Annotated[ModelPool, Depends(get_pool)]
AppSettings = Annotated[Settings, Depends(get_settings)]
AppMetrics = Annotated[Metrics, Depends(get_metrics)]
T = TypeVar("T")


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingBody, pool: Pool, metrics: AppMetrics) -> JSONResponse:
    backend = pool.serving(body.model)  # 503 naming why while the model's engine is down
    limits = pool.limits(body.model)
    req = EmbeddingRequest(
        request_id=f"embd-{uuid.uuid4().hex}",
        inputs=body.inputs(),
        dimensions=body.dimensions,
        max_input_tokens=limits.max_prompt_tokens,
    )
    labels = (backend.spec.id, backend.name)
    try:
        result = await _within(backend.embed(req), limits.request_timeout_s)
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


async def _within(work: Awaitable[T], seconds: float | None) -> T:
    """The model's request time limit; past it the work is cancelled and the client gets a 504."""
    if seconds is None:
        return await work
    with anyio.move_on_after(seconds):
        return await work
    raise RequestTimeout(f"The request did not finish within its {seconds:g} s limit.")


def _served(pool: ModelPool, model: str | None) -> Backend:
    """vLLM's clients may omit ``model``; that is unambiguous only when one model is served."""
    if model is not None:
        return pool.serving(model)
    served = list(pool)
    if len(served) != 1:
        names = ", ".join(b.spec.id for b in served)
        raise InvalidRequest(f"Missing required parameter: 'model' (served models: {names}).", param="model")
    return served[0]


@router.post("/tokenize")
async def tokenize(body: TokenizeBody, pool: Pool, settings: AppSettings) -> dict[str, Any]:
    body.check()
    backend = _served(pool, body.model)
    if body.messages is not None:
        # The chat route's own conversion (roles, content parts, limits), so the tokens are the chat's.
        chat = ChatCompletionRequest(model=backend.spec.id, messages=body.messages)
        messages = chat_request(chat, "tokenize", max_messages=settings.max_messages).messages
        req = TokenizeRequest(
            messages=messages,
            add_special_tokens=bool(body.add_special_tokens),
            add_generation_prompt=body.add_generation_prompt is not False and not body.continue_final_message,
            continue_final_message=bool(body.continue_final_message),
            return_token_strs=bool(body.return_token_strs),
        )
    else:
        req = TokenizeRequest(
            prompt=body.prompt,
            add_special_tokens=body.add_special_tokens is not False,
            return_token_strs=bool(body.return_token_strs),
        )
    result = await backend.tokenize(req)
    return {
        "count": len(result.tokens),
        "max_model_len": backend.info().context_length,
        "tokens": list(result.tokens),
        "token_strs": None if result.token_strs is None else list(result.token_strs),
    }


@router.post("/detokenize")
async def detokenize(body: DetokenizeBody, pool: Pool) -> dict[str, Any]:
    backend = _served(pool, body.model)
    return {"prompt": await backend.detokenize(body.tokens)}
