"""A one-request-at-a-time llama.cpp engine on llama-cpp-python's ``Llama``.

Requests queue on an asyncio lock so concurrent requests never share the context; the token
loop runs in a worker thread (llama_decode releases the GIL) and hands deltas to the event
loop. Sampling stays in llama.cpp's native sampler chain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from backends.errors import BackendUnavailable, Overloaded
from backends.textstream import TextStream
from backends.types import EngineStats, FinishReason, GenerationChunk, SamplingParams, Usage

log = logging.getLogger(__name__)

_DONE = object()


class SerialEngine:
    def __init__(self, model_path: Path, *, n_ctx: int, llama_kwargs: Mapping[str, Any], max_queue: int) -> None:
        # Imported here so the backend module loads (and reports why not) without the engine.
        import llama_cpp

        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx, verbose=False, **llama_kwargs)
        self._lock = asyncio.Lock()
        self._max_queue = max_queue
        self._waiting = 0
        self._running = 0
        self._closed = False
        # Held by a worker thread for as long as it touches the context: close() takes it, so
        # the model is never freed under a decode (a cancelled request's worker may still be
        # finishing its current token when its stream has already gone).
        self._decode_lock = threading.Lock()
        self._cancels: set[threading.Event] = set()

    @property
    def n_ctx(self) -> int:
        return int(self._llm.n_ctx())

    @property
    def metadata(self) -> Mapping[str, str]:
        return self._llm.metadata

    @property
    def bos_text(self) -> str:
        return str(self._llm._model.token_get_text(self._llm.token_bos()))

    @property
    def eos_text(self) -> str:
        return str(self._llm._model.token_get_text(self._llm.token_eos()))

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True))

    def stats(self) -> EngineStats:
        return EngineStats(running=self._running, waiting=self._waiting, kv_cache_usage=None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for cancel in list(self._cancels):
            cancel.set()
        with self._decode_lock:
            self._llm.close()

    async def generate(
        self, request_id: str, prompt_tokens: list[int], sampling: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        if self._waiting >= self._max_queue:
            raise Overloaded(f"{self._waiting} requests are already waiting for this model", retry_after=1.0)
        self._waiting += 1
        queued_at = time.perf_counter()
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        queue_s: float | None = time.perf_counter() - queued_at
        self._running += 1
        cancel = threading.Event()
        self._cancels.add(cancel)
        queue: asyncio.Queue[object] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        worker = loop.run_in_executor(None, self._run, prompt_tokens, sampling, cancel, loop, queue)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, GenerationChunk)
                if queue_s is not None:
                    item, queue_s = dataclasses.replace(item, queue_s=queue_s), None
                yield item
        finally:
            # Client gone or stream finished: stop the worker at its next token. The lock is
            # released only when the thread has let go of the context, even if this task is
            # being cancelled right now, so two requests never share it.
            cancel.set()
            self._cancels.discard(cancel)
            try:
                await asyncio.shield(worker)
            finally:
                if worker.done():
                    self._release(worker)
                else:  # this task was cancelled while waiting: release when the thread ends
                    worker.add_done_callback(self._release)

    def _release(self, _: object) -> None:
        self._running -= 1
        self._lock.release()

    def _run(
        self,
        prompt_tokens: list[int],
        sampling: SamplingParams,
        cancel: threading.Event,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[object],
    ) -> None:
        def put(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            with self._decode_lock:
                if self._closed:
                    raise BackendUnavailable("the model is shutting down")
                self._decode(prompt_tokens, sampling, cancel, put)
        except Exception as exc:  # handed to the consumer, which raises it in its own task
            log.exception("llama.cpp generation failed")
            put(exc)
        finally:
            put(_DONE)

    def _decode(self, prompt_tokens: list[int], sampling: SamplingParams, cancel: threading.Event, put: Any) -> None:
        llm = self._llm
        llm.set_seed(sampling.seed if sampling.seed is not None else secrets.randbits(31))
        # Evaluate every prompt from scratch: reusing the previous request's KV prefix changes
        # how the rest is split into batches, which changes the float sums enough to flip a
        # greedy near-tie ("Hola in Spanish" became "Hola in English" depending on what ran
        # before). Greedy output must not depend on the previous request.
        llm.reset()  # type: ignore[no-untyped-call]
        budget = self.n_ctx - len(prompt_tokens)
        if sampling.max_tokens is not None:
            budget = min(budget, sampling.max_tokens)
        text = TextStream(sampling.stop)
        produced = 0
        finish: FinishReason = "length"
        tokens = llm.generate(
            prompt_tokens,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            typical_p=1.0,
            temp=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty,
            frequency_penalty=sampling.frequency_penalty,
            presence_penalty=sampling.presence_penalty,
        )
        for token in tokens if budget > 0 else ():
            if cancel.is_set():
                finish = "cancelled"
                break
            if self._is_eog(llm._model.vocab, token):
                finish = "stop"
                break
            produced += 1
            delta = text.feed(llm.detokenize([token], special=False))
            if text.stopped:
                finish = "stop"
            put(GenerationChunk(text=delta, tokens=1))
            if text.stopped or produced >= budget:
                break
        tail = text.flush()
        put(GenerationChunk(text=tail, finish_reason=finish, usage=Usage(len(prompt_tokens), produced)))
