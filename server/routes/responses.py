"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

The same engine path as the other generation routes (pool, limits, deadline, metrics, queueing).
A stored response (``store``, default true) lands in the app's bounded ``ResponseStore``, so a
later request can continue it with ``previous_response_id``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from server.http.deps import RequestId, get_pool, get_settings
from server.http.sse import leased, sse_response
from server.openai.choices import ChoiceState, request_parser
from server.openai.streaming import Generation
from server.responses_api.events import fold_response, response_events
from server.responses_api.protocol import ResponsesRequest
from server.responses_api.render import ResponseShape, after
from server.responses_api.store import ResponseStore, StoredResponse
from server.responses_api.translate import responses_request
from server.runtime.metrics import Metrics, get_metrics
from server.runtime.observe import generation
from server.runtime.pool import ModelPool
from server.runtime.residency import Lease
from server.settings import Settings

router = APIRouter(prefix="/v1/responses")


def get_store(request: Request) -> ResponseStore:
    store: ResponseStore = request.app.state.responses
    return store


Pool = Annotated[ModelPool, Depends(get_pool)]
AppSettings = Annotated[Settings, Depends(get_settings)]
AppMetrics = Annotated[Metrics, Depends(get_metrics)]
Store = Annotated[ResponseStore, Depends(get_store)]


@router.post("")
async def create(
    body: ResponsesRequest, pool: Pool, settings: AppSettings, metrics: AppMetrics, store: Store, request_id: RequestId
) -> Response:
    # Loads the model first when it is not loaded; 503 while its engine is down or restarting.
    return await leased(
        pool, body.model, None, lambda lease: _answer(body, lease, pool, settings, metrics, store, request_id)
    )


async def _answer(
    body: ResponsesRequest,
    lease: Lease,
    pool: ModelPool,
    settings: Settings,
    metrics: Metrics,
    store: ResponseStore,
    request_id: str,
) -> Response:
    backend = lease.backend
    limits = pool.limits(body.model)
    earlier = store.get(body.previous_response_id).conversation if body.previous_response_id else ()
    rid = f"resp_{request_id}"
    translated = responses_request(body, rid, earlier, limits, settings.max_messages)
    req = translated.request
    gen = await Generation.start(generation(metrics, backend, "responses", req, limits.request_timeout_s))
    state = ChoiceState(0, request_parser(req, backend.call_format()))
    shape = ResponseShape(rid, body)

    def keep(final: dict[str, Any]) -> None:
        if body.store is not False:
            store.put(rid, StoredResponse.of(final, after(translated.history, state)))

    if not body.stream:
        final = await fold_response(gen, state, shape)
        keep(final)
        return JSONResponse(final)
    return sse_response(lease.hold(response_events(gen, state, shape, keep)), settings)


@router.get("/{response_id}")
async def retrieve(response_id: str, store: Store) -> dict[str, Any]:
    return store.get(response_id).body


@router.delete("/{response_id}")
async def delete(response_id: str, store: Store) -> dict[str, Any]:
    store.delete(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}
