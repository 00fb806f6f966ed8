"""The one place per-request metrics are recorded: a wrapper around the backend's chunk stream.

What is measured, from the moment the request reaches the backend (``observe`` is called):

- time to first token: until the engine's first chunk;
- inter-token latency: the gap between chunks that carry sampled tokens, divided by their count;
- end-to-end latency: until the chunk with ``finish_reason`` (finished requests only);
- queue time: only when the engine reports it (an optional ``queue_s`` on the first chunk);
- prefill time: TTFT minus the reported queue time; with no report, TTFT of the requests that found
  no other request of this server in flight on the model (nothing could queue ahead of them, so
  their TTFT is tokenization + prompt processing + the first sample). Busy-time requests are not
  sampled rather than reported with their queueing folded in.

Outcome (``status``): ``ok``; ``cancelled`` when the consumer closes or cancels the stream before
its last chunk (client gone); else the error's class: ``invalid_request`` (4xx, e.g.
context_length_exceeded), ``overloaded`` (429) or ``error`` (5xx / unexpected).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from prometheus_client import Counter, Histogram

from backends.base import Backend
from backends.types import GenerationChunk, GenerationRequest
from server.http.errors import classify
from server.runtime.deadline import with_deadline
from server.runtime.metrics import Metrics

NO_FINISH = "none"


def generation(
    metrics: Metrics, backend: Backend, endpoint: str, req: GenerationRequest, timeout_s: float | None
) -> AsyncIterator[GenerationChunk]:
    """The one way a route runs a generation, whatever API it speaks: the backend's stream under the
    request's time limit, observed. The deadline sits inside observe, so a timeout is counted like
    any other failure."""
    return observe(metrics, backend, endpoint, with_deadline(backend.generate(req), timeout_s))


def observe(
    metrics: Metrics, backend: Backend, endpoint: str, chunks: AsyncIterator[GenerationChunk]
) -> AsyncIterator[GenerationChunk]:
    """Wrap ``chunks``; the clock starts now. Closing the wrapper closes ``chunks``."""
    model = backend.spec.id
    labels = (model, backend.name)
    # The per-token series are looked up once per request, not once per token.
    tokens, itl = metrics.generation_tokens.labels(*labels), metrics.itl.labels(*labels)
    rec = _Recorder(metrics, model, labels, endpoint, tokens, itl, time.perf_counter())
    rec.alone = metrics.in_flight.get(model, 0) == 0
    metrics.in_flight[model] = metrics.in_flight.get(model, 0) + 1
    return _observed(rec, chunks)


async def _observed(rec: _Recorder, chunks: AsyncIterator[GenerationChunk]) -> AsyncIterator[GenerationChunk]:
    try:
        async for chunk in chunks:
            rec.chunk(chunk)
            yield chunk
        rec.end("error", NO_FINISH)  # the engine stopped without a last chunk
    except BaseException as exc:
        if isinstance(exc, (GeneratorExit, anyio.get_cancelled_exc_class())):
            rec.end("cancelled", NO_FINISH)
        else:
            rec.end(_status_of(exc), NO_FINISH)
        raise
    finally:
        rec.release()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def _status_of(exc: BaseException) -> str:
    status = classify(exc)[0]
    if status == 429:
        return "overloaded"
    return "invalid_request" if status < 500 else "error"


_FINISH_STATUS = {"cancelled": "cancelled", "error": "error"}


@dataclass(slots=True)
class _Recorder:
    metrics: Metrics
    model: str
    labels: tuple[str, str]
    endpoint: str
    tokens: Counter
    itl: Histogram
    start: float
    alone: bool = False
    first_at: float | None = None
    last_token_at: float | None = None
    done: bool = False
    released: bool = False

    def chunk(self, chunk: GenerationChunk) -> None:
        m, now = self.metrics, time.perf_counter()
        if self.first_at is None:
            self.first_at = now
            self._first(chunk, now - self.start)
        if chunk.tokens > 0:
            self.tokens.inc(chunk.tokens)
            if self.last_token_at is not None:
                gap = (now - self.last_token_at) / chunk.tokens
                for _ in range(chunk.tokens):
                    self.itl.observe(gap)
            self.last_token_at = now
        if chunk.finish_reason is not None:
            if chunk.usage is not None:
                m.prompt_tokens.labels(*self.labels).inc(chunk.usage.prompt_tokens)
            status = _FINISH_STATUS.get(chunk.finish_reason, "ok")
            if status == "ok":
                m.e2e.labels(*self.labels).observe(now - self.start)
            self.end(status, chunk.finish_reason)

    def _first(self, chunk: GenerationChunk, ttft: float) -> None:
        m = self.metrics
        m.ttft.labels(*self.labels).observe(ttft)
        # Engines that know how long a request waited may say so on its first chunk.
        if chunk.queue_s is not None:
            m.queue.labels(*self.labels).observe(chunk.queue_s)
            m.prefill.labels(*self.labels).observe(max(0.0, ttft - chunk.queue_s))
        elif self.alone:
            m.prefill.labels(*self.labels).observe(ttft)

    def end(self, status: str, finish_reason: str) -> None:
        if not self.done:
            self.done = True
            self.metrics.requests.labels(*self.labels, self.endpoint, status, finish_reason).inc()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.metrics.in_flight[self.model] -= 1
