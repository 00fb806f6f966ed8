"""Request and slot state for the batched engine.

``RequestHandle`` is the only object both threads touch: the engine thread reads its immutable
fields and hands its chunks to its ``sink``; the consumer sets ``cancelled``. ``Slot`` and
``Active`` belong to the engine thread alone, so they need no locking.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from backends.llama_cpp.batch_sampling import Draw
from backends.llama_cpp.grammar import Grammar
from backends.textstream import TextStream
from backends.types import GenerationChunk, SamplingParams, TokenLogprob

Item = GenerationChunk | BaseException


class Sink(Protocol):
    """Where the engine thread hands a step's items: once per step and sink, never per token.

    Sinks are grouped by equality, so every request with an equal sink shares the hand-off.
    """

    def send(self, items: list[tuple[RequestHandle, Item]]) -> None:
        """Engine thread. Raises RuntimeError when nobody will read these (the engine then stops
        computing those requests)."""
        ...


@dataclass(frozen=True, slots=True)
class LoopSink:
    """Requests consumed on an asyncio loop (``RequestHandle.take``): one thread-safe wake-up per step."""

    loop: asyncio.AbstractEventLoop

    def send(self, items: list[tuple[RequestHandle, Item]]) -> None:
        self.loop.call_soon_threadsafe(deliver, items)  # RuntimeError once the loop is closed


class RequestHandle:
    """One submitted request, as seen by both the event loop and the engine thread."""

    __slots__ = (
        "cancelled",
        "counted",
        "done",
        "grammar",
        "inbox",
        "limit",
        "prompt",
        "request_id",
        "sampling",
        "sink",
        "submitted",
        "tag",
        "waiter",
    )

    def __init__(
        self,
        request_id: str,
        prompt: list[int],
        sampling: SamplingParams,
        limit: int,
        sink: Sink,
        grammar: Grammar | None = None,
        tag: int = 0,
    ) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.sampling = sampling
        self.grammar = grammar  # already checked to compile, so the engine thread cannot fail on it
        self.limit = limit  # most completion tokens: max_tokens capped by the room left in n_ctx
        self.sink = sink
        self.tag = tag  # the sink's own number for the request (the engine pipe's rid)
        self.submitted = time.monotonic()  # queue time = admission - this
        self.inbox: deque[Item] = deque()  # LoopSink requests: touched on the loop thread only
        self.waiter: asyncio.Future[None] | None = None
        # Set by the loop when the consumer goes away. A plain bool is enough: the engine
        # thread only reads it once per step, and a one-step delay is the promised bound.
        self.cancelled = False
        self.done = False  # loop side: the final chunk (or an error) was consumed
        # Whether the request still counts against the engine's capacity; flipped once, under the
        # engine's lock, by whichever side lets go first (engine release or client cancel).
        self.counted = True

    async def take(self) -> list[Item]:
        """Wait for at least one item, then return everything delivered so far."""
        if not self.inbox:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        items = list(self.inbox)
        self.inbox.clear()
        return items


def deliver(items: Sequence[tuple[RequestHandle, Item]]) -> None:
    """Runs on the event loop (scheduled by ``LoopSink`` once per step and loop)."""
    for req, item in items:
        req.inbox.append(item)
        waiter = req.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Deltas:
    """Turns the chunks a request got since its consumer last looked into at most one delta.

    The engine sends a chunk per token, with empty text while the request's ``TextStream`` holds
    text back (a partial UTF-8 character, a possible stop string). An empty delta is never
    yielded: its tokens and queue time ride on the next one.
    """

    __slots__ = ("carried", "queue_s")

    def __init__(self) -> None:
        self.carried = 0
        self.queue_s: float | None = None

    def merge(self, chunks: Sequence[GenerationChunk]) -> GenerationChunk | None:
        """The delta to yield (the last one has ``finish_reason``), None while all text is held back."""
        if len(chunks) == 1 and not self.carried and self.queue_s is None and chunks[0].text:
            return chunks[0]  # the usual step: one token of visible text, nothing to merge
        text = "".join(c.text for c in chunks)
        tokens = self.carried + sum(c.tokens for c in chunks)
        queue_s = next((c.queue_s for c in chunks if c.queue_s is not None), self.queue_s)
        logprobs: tuple[TokenLogprob, ...] = sum((c.logprobs for c in chunks), ())
        last = chunks[-1] if chunks else None
        if last is not None and last.finish_reason is not None:
            return GenerationChunk(
                text, tokens, last.finish_reason, last.usage, queue_s, logprobs, stop_sequence=last.stop_sequence
            )
        if not text:
            self.carried, self.queue_s = tokens, queue_s
            return None
        self.carried, self.queue_s = 0, None
        return GenerationChunk(text, tokens, queue_s=queue_s, logprobs=logprobs)


@dataclass(slots=True, eq=False)
class Active:
    """Engine-side state of the request a slot is serving."""

    req: RequestHandle
    sampler: Any  # the native chain, or None when ``draw`` samples the request in numpy
    draw: Draw | None
    on_backend: bool  # ``sampler`` runs inside the decode graph (llama_set_sampler)
    text: TextStream
    n_fed: int  # prompt tokens already in the KV cache (reused ones included)
    n_cached: int  # prompt tokens reused from the slot's previous occupant
    admitted: int  # admission order: earlier requests get the prefill budget first
    started: float
    n_generated: int = 0
    queue_s: float | None = None  # reported once, on the request's first chunk, then None
    next_token: int = -1  # sampled token still to be decoded; -1 while the prompt is prefilling
    batch_index: int = -1  # where this step's logits for the request are, -1 if none
    # Logprobs of tokens whose text the TextStream still holds back, sent with that text.
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Slot:
    """One llama.cpp sequence id and the tokens its KV cells hold, in position order."""

    seq_id: int
    kv: list[int] = field(default_factory=list)
    active: Active | None = None
    last_used: int = 0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def pick_slot(idle: Sequence[Slot], prompt: Sequence[int]) -> tuple[Slot, int]:
    """The idle slot whose retained KV shares the longest prefix with ``prompt``.

    Ties (including "no slot shares anything") go to the least recently used slot, so a cache
    that just served someone survives as long as possible.
    """
    best = min(idle, key=lambda s: s.last_used)
    best_len = common_prefix(best.kv, prompt)
    for slot in idle:
        n = common_prefix(slot.kv, prompt)
        if n > best_len:
            best, best_len = slot, n
    return best, best_len
