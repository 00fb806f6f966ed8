"""/tokenize and /detokenize (vLLM's shape), on any backend that can; one that cannot answers 400
``unsupported_parameter`` with the reason (``Backend`` defaults)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from backends.base import Backend
from backends.embeddings import TokenizeRequest
from backends.errors import InvalidRequest
from server.http.deps import get_pool, get_settings
from server.openai.protocol import ChatCompletionRequest
from server.openai.tokenize_protocol import DetokenizeBody, TokenizeBody
from server.openai.translate import chat_request
from server.runtime.pool import ModelPool
from server.settings import Settings

router = APIRouter()

Pool = Annotated[ModelPool, Depends(get_pool)]
AppSettings = Annotated[Settings, Depends(get_settings)]


@asynccontextmanager
async def _served(pool: ModelPool, model: str | None) -> AsyncIterator[Backend]:
    """The model, held (and loaded) for the request. vLLM's clients may omit ``model``; that is
    unambiguous only when one model is served."""
    if model is None:
        served = list(pool)
        if len(served) != 1:
            names = ", ".join(b.spec.id for b in served)
            raise InvalidRequest(f"Missing required parameter: 'model' (served models: {names}).", param="model")
        model = served[0].spec.id
    lease = await pool.acquire(model)
    try:
        yield lease.backend
    finally:
        lease.release()


@router.post("/tokenize")
async def tokenize(body: TokenizeBody, pool: Pool, settings: AppSettings) -> dict[str, Any]:
    body.check()
    async with _served(pool, body.model) as backend:
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
    async with _served(pool, body.model) as backend:
        return {"prompt": await backend.detokenize(body.tokens)}
