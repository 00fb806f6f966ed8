"""Anthropic's Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

The same engine path as the OpenAI routes (pool, limits, deadline, metrics, queueing); only the
request and the answer are Anthropic's. Errors on these paths are written in Anthropic's shape.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from server.anthropic.events import fold_message, message_events, ping_event
from server.anthropic.protocol import CountTokensRequest, MessagesRequest
from server.anthropic.render import MessageRenderer
from server.anthropic.translate import count_request, messages_request, shows_thinking
from server.http.deps import RequestId, get_pool, get_settings
from server.http.sse import leased, sse_response
from server.openai.choices import ChoiceState, request_parser
from server.openai.streaming import Generation
from server.runtime.metrics import Metrics, get_metrics
from server.runtime.observe import generation
from server.runtime.pool import ModelPool
from server.runtime.residency import Lease
from server.settings import Settings

PREFIX = "/v1/messages"
router = APIRouter(prefix=PREFIX)

Pool = Annotated[ModelPool, Depends(get_pool)]
AppSettings = Annotated[Settings, Depends(get_settings)]
AppMetrics = Annotated[Metrics, Depends(get_metrics)]


@router.post("")
async def messages(
    body: MessagesRequest, pool: Pool, settings: AppSettings, metrics: AppMetrics, request_id: RequestId
) -> Response:
    # Loads the model first when it is not loaded; 503 while its engine is down or restarting.
    return await leased(pool, body.model, None, lambda lease: _answer(body, lease, pool, settings, metrics, request_id))


async def _answer(
    body: MessagesRequest, lease: Lease, pool: ModelPool, settings: Settings, metrics: Metrics, request_id: str
) -> Response:
    backend = lease.backend
    limits = pool.limits(body.model)
    rid = f"msg_{request_id}"
    req = messages_request(body, rid, limits, settings.max_messages)
    gen = await Generation.start(generation(metrics, backend, "messages", req, limits.request_timeout_s))
    state = ChoiceState(0, request_parser(req, backend.call_format()), include_reasoning=shows_thinking(body))
    shape = MessageRenderer(rid, body.model)
    if not body.stream:
        return JSONResponse(await fold_message(gen, state, shape))
    return sse_response(lease.hold(message_events(gen, state, shape)), settings, ping=ping_event)


@router.post("/count_tokens")
async def count_tokens(body: CountTokensRequest, pool: Pool, settings: AppSettings) -> dict[str, int]:
    lease = await pool.acquire(body.model)
    try:
        result = await lease.backend.tokenize(count_request(body, settings.max_messages))
    finally:
        lease.release()
    return {"input_tokens": len(result.tokens)}
