"""The OpenAI routes: parse, pick the model, translate, generate, answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from backends.base import Backend
from backends.call_parser import call_parser
from backends.errors import InvalidRequest
from backends.types import GenerationRequest, ToolCallConstraint
from server.http.deps import RequestId, get_pool, get_settings
from server.openai.choices import ChoiceState
from server.openai.protocol import ChatCompletionRequest, CompletionRequest
from server.openai.responses import ResponseRenderer
from server.openai.streaming import fold, sse_events, start_all
from server.openai.translate import chat_request, choices, completion_requests
from server.runtime.deadline import with_deadline
from server.runtime.metrics import Metrics, get_metrics
from server.runtime.observe import observe
from server.runtime.pool import ModelPool
from server.runtime.residency import Lease
from server.settings import Settings

router = APIRouter(prefix="/v1")

Pool = Annotated[ModelPool, Depends(get_pool)]
AppSettings = Annotated[Settings, Depends(get_settings)]
AppMetrics = Annotated[Metrics, Depends(get_metrics)]


async def _generate(
    body: ChatCompletionRequest | CompletionRequest,
    pool: ModelPool,
    settings: Settings,
    metrics: Metrics,
    request_id: str,
) -> Response:
    # Loads the model first when it is not loaded; 503 while its engine is down or restarting.
    lease = await pool.acquire(body.model, body.keep_alive)
    handed_over = False
    try:
        response = await _respond(body, lease, pool, settings, metrics, request_id)
        handed_over = isinstance(response, EventSourceResponse)
        return response
    finally:
        if not handed_over:  # a stream releases the model when it ends
            lease.release()


async def _respond(
    body: ChatCompletionRequest | CompletionRequest,
    lease: Lease,
    pool: ModelPool,
    settings: Settings,
    metrics: Metrics,
    request_id: str,
) -> Response:
    backend = lease.backend
    limits = pool.limits(body.model)
    chat = isinstance(body, ChatCompletionRequest)
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{request_id}"
    n = body.n or 1
    if isinstance(body, ChatCompletionRequest):
        reqs = [chat_request(body, rid, limits, settings.max_messages)]
        wants_logprobs = bool(body.logprobs)
        prefixes = [""]
    else:
        reqs = completion_requests(body, rid, limits)
        wants_logprobs = body.logprobs is not None
        prefixes = [await _echo(backend, r) if body.echo else "" for r in reqs]
    if len(reqs) * n > settings.max_choices:
        raise InvalidRequest(
            f"The request asks for {len(reqs) * n} choices ({len(reqs)} prompt(s) x n={n}); this server "
            f"generates at most {settings.max_choices} per request (setting max_choices).",
            param="n",
        )
    shape = ResponseRenderer(id=rid, model=body.model, chat=chat, logprobs=wants_logprobs)
    endpoint = "chat_completions" if chat else "completions"
    # Choice index = prompt * n + j, as OpenAI numbers them. Each choice is its own engine request
    # (batched together by the engine). The deadline sits inside observe, so a timeout is counted
    # like any other failure.
    streams = [
        observe(metrics, backend, endpoint, with_deadline(backend.generate(r), limits.request_timeout_s))
        for req in reqs
        for r in choices(req, n)
    ]
    gens = await start_all(streams)
    calls = isinstance(reqs[0].constraint, ToolCallConstraint)
    fmt = backend.call_format()
    include_reasoning = not isinstance(body, ChatCompletionRequest) or body.include_reasoning is not False
    states = [
        ChoiceState(
            i,
            call_parser(fmt, reqs[0].tools) if calls else None,
            prefixes[i // n],
            include_reasoning=include_reasoning,
        )
        for i in range(len(gens))
    ]
    if not body.stream:
        return JSONResponse(await fold(gens, states, shape, n))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return EventSourceResponse(
        lease.hold(sse_events(gens, states, shape, include_usage=include_usage, n=n)),
        ping=int(max(1, settings.sse_ping_seconds)),
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        # On shutdown, sse-starlette would cut streams at once; let them finish within the grace.
        shutdown_grace_period=settings.shutdown_grace_s,
    )


async def _echo(backend: Backend, req: GenerationRequest) -> str:
    """The prompt as text, for ``echo``: token-id prompts are decoded by the model's tokenizer."""
    if isinstance(req.prompt, tuple):
        return await backend.detokenize(list(req.prompt))
    return req.prompt or ""


@router.post("/chat/completions")
async def chat_completions(
    body: ChatCompletionRequest, pool: Pool, settings: AppSettings, metrics: AppMetrics, request_id: RequestId
) -> Response:
    return await _generate(body, pool, settings, metrics, request_id)


@router.post("/completions")
async def completions(
    body: CompletionRequest, pool: Pool, settings: AppSettings, metrics: AppMetrics, request_id: RequestId
) -> Response:
    return await _generate(body, pool, settings, metrics, request_id)
