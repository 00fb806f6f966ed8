"""Continuous batching over one llama.cpp context: many concurrent requests, one decode per step.

``BatchedEngine`` is the event-loop side: it admits requests through a bounded FIFO
(``admission.RequestGate``) and streams their deltas. A dedicated engine thread
(``scheduler.Scheduler``) owns the llama.cpp context and decodes every running sequence in one
``llama_decode`` per step; it releases the GIL inside llama.cpp, so the event loop keeps serving.

Construction loads the model (blocking, a second or more): build the engine off the event loop
(``await asyncio.to_thread(BatchedEngine, ...)``) and call ``close()`` when done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from types import MappingProxyType

import llama_cpp as lc

from backends.checks import check_prompt_fits, check_token_ids
from backends.errors import ConfigError
from backends.llama_cpp import grammar as gr
from backends.llama_cpp import sampling as smp
from backends.llama_cpp.admission import RequestGate
from backends.llama_cpp.native import ContextConfig, NativeModel
from backends.llama_cpp.options import engine_option_problem
from backends.llama_cpp.scheduler import Scheduler
from backends.llama_cpp.slots import Deltas, LoopSink, RequestHandle, Sink
from backends.types import Constraint, EngineStats, GenerationChunk, SamplingParams, Usage

logger = logging.getLogger(__name__)


class BatchedEngine:
    """Implements ``LlamaEngine``. ``n_ctx`` is per request; the context holds ``parallel x n_ctx``.

    ``sampler`` picks the sampling route (``sampling.SAMPLER_ROUTES``); None or "auto" reads
    ``QUANTSERVE_LLAMA_SAMPLER`` (for benchmarks), else the model's placement decides: "backend"
    when layers are offloaded to a GPU, "numpy" on the CPU.

    ``n_ctx=0`` means the model's training context. ``n_threads=None`` uses every CPU this
    process may run on. ``prefix_cache`` keeps a finished request's KV cells in its idle slot so
    a later prompt with the same beginning skips recomputing it.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int,
        parallel: int,
        n_batch: int,
        n_threads: int | None,
        n_gpu_layers: int,
        flash_attn: bool,
        cache_type_k: str,
        cache_type_v: str,
        max_queue: int,
        prefix_cache: bool,
        sampler: str | None = None,
    ) -> None:
        problem = engine_option_problem(
            n_ctx=n_ctx,
            parallel=parallel,
            n_batch=n_batch,
            flash_attn=flash_attn,
            cache_type_k=cache_type_k,
            cache_type_v=cache_type_v,
            max_queue=max_queue,
        )
        if problem is not None:
            raise ConfigError(problem)
        threads = n_threads or _usable_cpus()
        cfg = ContextConfig(n_ctx, parallel, n_batch, threads, n_gpu_layers, flash_attn, cache_type_k, cache_type_v)
        self._native = NativeModel(Path(model_path), cfg)
        try:
            self._metadata = MappingProxyType(self._native.metadata())
        except BaseException:
            self._native.close()  # nothing else will ever free a half-built engine
            raise
        self._n_ctx = self._native.n_ctx_seq
        if self._n_ctx > self._native.n_ctx_train:
            logger.warning("n_ctx %d exceeds the model's training context %d", self._n_ctx, self._native.n_ctx_train)
        bos, eos = self._native.bos_eos()
        self._bos_text = self._native.token_text(bos)
        self._eos_text = self._native.token_text(eos)
        self._parallel = parallel
        self._gate = RequestGate(slots=parallel, max_queue=max_queue)
        # Tokens always recomputed on a prefix hit. Flash attention computes each query row on its
        # own, so recomputing just the last prompt token gives bit-identical logits. Without it,
        # attention takes a different matmul path for one query row than for several, which
        # rounds differently; recomputing two rows keeps the multi-row path of a cold prefill.
        min_tail = 1 if flash_attn else 2
        route = _sampler_route(sampler, n_gpu_layers)
        self._scheduler = Scheduler(
            self._native,
            self._gate,
            parallel=parallel,
            n_batch=n_batch,
            prefix_cache=prefix_cache,
            min_tail=min_tail,
            route=route,
        )
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, name=f"llama-{model_path.name}", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            self._native.close()
            raise self._start_error
        logger.info(
            "batched llama.cpp engine: %s, %d slots x %d tokens, n_batch %d, %d threads, flash_attn %s, sampler %s",
            model_path.name,
            parallel,
            self._n_ctx,
            n_batch,
            threads,
            flash_attn,
            route,
        )

    def _thread_main(self) -> None:
        # Every llama_decode, the warm-up included, runs on this one thread. ggml computes with
        # OpenMP, and an OpenMP thread team left behind by a decode on another thread (the one
        # that built the engine) measurably slows this thread's decodes (~50% on 2 cores).
        try:
            self._native.warmup()
        except BaseException as exc:
            self._start_error = exc
            self._gate.close()
            return
        finally:
            self._started.set()
        self._scheduler.run()

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def metadata(self) -> Mapping[str, str]:
        return self._metadata

    @property
    def bos_text(self) -> str:
        return self._bos_text

    @property
    def eos_text(self) -> str:
        return self._eos_text

    @property
    def alive(self) -> bool:
        """Whether the engine thread runs (False once it crashed, and after close())."""
        return self._thread.is_alive()

    @property
    def failure(self) -> str | None:
        """Why the engine thread crashed (exception type and message); None if it has not."""
        return self._scheduler.failure

    @property
    def generated_tokens(self) -> int:
        """Tokens sampled since start, all requests together (a server-side progress counter)."""
        return self._scheduler.generated

    @property
    def fim_tokens(self) -> tuple[int, int, int] | None:
        return self._native.fim_tokens()

    @property
    def n_vocab(self) -> int:
        return self._native.n_vocab

    @property
    def native(self) -> NativeModel:
        """The native model, for the embedding context built on the same weights."""
        return self._native

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return self._native.tokenize(text, add_special=add_special)

    def _grammar(self, constraint: Constraint | None) -> gr.Grammar | None:
        """The constraint as a grammar, compiled once here so a bad one fails before queueing."""
        if constraint is None:
            return None
        grammar = gr.build(constraint)
        smp.free_chain(gr.sampler(grammar, self._native.vocab))
        return grammar

    def prepare(
        self,
        request_id: str,
        prompt_tokens: list[int],
        sampling: SamplingParams,
        constraint: Constraint | None,
        sink: Sink,
        tag: int = 0,
    ) -> RequestHandle:
        """A checked request whose items the engine thread will hand to ``sink`` once submitted.

        Raises ``InvalidRequest`` (a prompt past ``n_ctx``, a bad logit_bias id, a constraint
        that does not compile) before anything is queued.
        """
        limit = self._completion_limit(prompt_tokens, sampling)
        check_token_ids((token for token, _ in sampling.logit_bias), self._native.n_vocab, "logit_bias")
        grammar = self._grammar(constraint)
        return RequestHandle(request_id, list(prompt_tokens), sampling, limit, sink, grammar, tag)

    def submit(self, req: RequestHandle, *, queue_timeout_s: float | None = None) -> None:
        """Queue ``req`` for a slot: raises ``Overloaded`` when full, ``BackendUnavailable`` when stopped.

        A request with no room for a completion token is answered "length" through its sink at once.
        """
        if req.limit == 0:
            req.counted = False  # never submitted: nothing to release
            req.sink.send([(req, GenerationChunk(finish_reason="length", usage=Usage(len(req.prompt), 0)))])
            return
        self._gate.submit(req, queue_timeout_s=queue_timeout_s)

    def cancel(self, req: RequestHandle) -> None:
        """Nobody reads ``req`` any more: the engine drops the sequence and its KV cells next step."""
        req.cancelled = True
        # Give the capacity back now, so a client retrying at once is not told "full".
        self._gate.release(req)
        self._gate.wake.set()

    async def generate(
        self,
        request_id: str,
        prompt_tokens: list[int],
        sampling: SamplingParams,
        constraint: Constraint | None = None,
        *,
        queue_timeout_s: float | None = None,
    ) -> AsyncGenerator[GenerationChunk, None]:
        req = self.prepare(request_id, prompt_tokens, sampling, constraint, LoopSink(asyncio.get_running_loop()))
        # Raises before the first yield: the HTTP layer can still answer 429/503.
        self.submit(req, queue_timeout_s=queue_timeout_s)
        deltas = Deltas()
        try:
            while True:
                items = await req.take()  # everything delivered since we last looked, merged below
                tail = items[-1]
                delta = deltas.merge([c for c in items if isinstance(c, GenerationChunk)])
                if delta is not None and delta.finish_reason is not None:
                    req.done = True
                    yield delta
                    return
                if isinstance(tail, BaseException):
                    req.done = True
                    raise tail
                if delta is not None:
                    yield delta
        finally:
            if not req.done:
                self.cancel(req)

    def stats(self) -> EngineStats:
        running = self._scheduler.running
        return EngineStats(
            running=running,
            waiting=max(0, self._gate.outstanding - running),
            kv_cache_usage=self._scheduler.kv_used / (self._n_ctx * self._parallel),
        )

    def close(self) -> None:
        """Stop the engine thread (outstanding requests fail with BackendUnavailable), free the model."""
        self._gate.close()
        if threading.current_thread() is self._thread:
            return  # called from the engine thread itself: it exits after this step
        self._thread.join()
        self._native.close()  # idempotent; only once the thread no longer touches the context

    def _completion_limit(self, prompt: list[int], sampling: SamplingParams) -> int:
        """Most completion tokens: max_tokens, capped so prompt + completion never exceed n_ctx."""
        check_prompt_fits(len(prompt), n_ctx=self._n_ctx, max_tokens=None)
        room = self._n_ctx - len(prompt)
        return room if sampling.max_tokens is None else min(sampling.max_tokens, room)


def _sampler_route(sampler: str | None, n_gpu_layers: int) -> smp.SamplerRoute:
    # The model's option wins; the environment variable lets a benchmark switch every model.
    choice = sampler if sampler not in (None, "auto") else os.environ.get("QUANTSERVE_LLAMA_SAMPLER") or "auto"
    if choice == "auto":
        return "backend" if n_gpu_layers != 0 and lc.llama_supports_gpu_offload() else "numpy"
    for route in smp.SAMPLER_ROUTES:
        if choice == route:
            return route
    raise ConfigError(f"sampler must be one of auto, {', '.join(smp.SAMPLER_ROUTES)}; got {choice!r}")


def _usable_cpus() -> int:
    # The affinity mask, not os.cpu_count(): containers often pin us to fewer cores than the host has.
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
