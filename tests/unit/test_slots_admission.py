"""Slot picking and admission control of the batched llama.cpp engine, without an engine: these are
the rules that decide which KV cache a prompt reuses, who gets 429, when a waiting request
times out, and how a request's chunks become the deltas its stream yields."""

from __future__ import annotations

import asyncio
import time

import pytest

from backends.errors import BackendUnavailable, Overloaded, QueueTimeout
from backends.llama_cpp.admission import RequestGate
from backends.llama_cpp.slots import Deltas, LoopSink, RequestHandle, Slot, common_prefix, pick_slot
from backends.types import GenerationChunk, SamplingParams, Usage


def handle(loop: asyncio.AbstractEventLoop, rid: str = "r") -> RequestHandle:
    return RequestHandle(rid, [1, 2, 3], SamplingParams(), limit=8, sink=LoopSink(loop))


@pytest.mark.parametrize(
    ("a", "b", "n"),
    [([], [1], 0), ([1, 2, 3], [1, 2, 3], 3), ([1, 2, 3], [1, 2], 2), ([1, 9], [1, 2, 3], 1), ([5], [1], 0)],
)
def test_common_prefix(a: list[int], b: list[int], n: int) -> None:
    assert common_prefix(a, b) == n


def test_pick_slot_prefers_the_longest_shared_prefix() -> None:
    cold = Slot(0, kv=[], last_used=0)
    near = Slot(1, kv=[1, 2, 7], last_used=5)
    best = Slot(2, kv=[1, 2, 3, 4], last_used=9)
    slot, shared = pick_slot([cold, near, best], [1, 2, 3, 4, 5])
    assert (slot.seq_id, shared) == (2, 4)


def test_pick_slot_ties_go_to_the_least_recently_used() -> None:
    # Nothing shared anywhere: the slot idle longest is reused, so a fresh cache survives longest.
    recent = Slot(0, kv=[9, 9], last_used=10)
    old = Slot(1, kv=[8, 8], last_used=2)
    slot, shared = pick_slot([recent, old], [1, 2])
    assert (slot.seq_id, shared) == (1, 0)


async def test_gate_refuses_past_slots_plus_queue_with_retry_after() -> None:
    loop = asyncio.get_running_loop()
    gate = RequestGate(slots=1, max_queue=1)
    first, second = handle(loop, "a"), handle(loop, "b")
    gate.submit(first)
    gate.submit(second)
    with pytest.raises(Overloaded) as err:
        gate.submit(handle(loop, "c"))
    assert "1 slots are busy and 1 requests are queued" in str(err.value)
    assert err.value.retry_after is not None and err.value.retry_after >= 1
    assert [h.request_id for h in gate.take_new()] == ["a", "b"]
    gate.release(first)
    gate.release(first)  # the second release of the same request must not count twice
    assert gate.outstanding == 1
    gate.submit(handle(loop, "d"))  # a place freed up
    assert gate.outstanding == 2


async def test_gate_expires_only_requests_past_their_queue_deadline() -> None:
    loop = asyncio.get_running_loop()
    gate = RequestGate(slots=1, max_queue=4)
    running, patient, impatient = handle(loop, "run"), handle(loop, "patient"), handle(loop, "impatient")
    gate.submit(running)
    gate.submit(patient)  # no queue timeout: waits as long as it takes
    gate.submit(impatient, queue_timeout_s=0.01)
    assert gate.expire([patient, impatient]) == []  # not yet
    time.sleep(0.02)
    expired = gate.expire([patient, impatient])
    assert [req.request_id for req, _ in expired] == ["impatient"]
    error = expired[0][1]
    assert isinstance(error, QueueTimeout) and "0.01 s" in str(error)
    assert impatient.cancelled and not impatient.counted
    assert gate.outstanding == 2
    assert gate.expire([patient, impatient]) == []  # expired once only


async def test_closed_gate_refuses_with_backend_unavailable_and_wakes_the_engine() -> None:
    gate = RequestGate(slots=2, max_queue=0)
    gate.wake.clear()
    gate.close()
    assert gate.closed and gate.wake.is_set()
    with pytest.raises(BackendUnavailable):
        gate.submit(handle(asyncio.get_running_loop()))


def test_deltas_carry_held_back_tokens_into_the_next_visible_text() -> None:
    deltas = Deltas()
    # A partial UTF-8 character: its token is held back, never yielded as an empty delta.
    assert deltas.merge([GenerationChunk("", 1, queue_s=0.5)]) is None
    assert deltas.merge([GenerationChunk("é", 1)]) == GenerationChunk("é", 2, queue_s=0.5)
    plain = GenerationChunk("a", 1)
    assert deltas.merge([plain]) is plain  # nothing carried: the engine's chunk as it is
    # Several steps' chunks at once (a consumer that fell behind), ending the stream.
    final = GenerationChunk("", 0, "stop", Usage(3, 4))
    merged = deltas.merge([GenerationChunk("b", 1), GenerationChunk("", 1), final])
    assert merged == GenerationChunk("b", 2, "stop", Usage(3, 4))
