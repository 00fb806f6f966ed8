"""The whole-request time limit around a chunk stream: what it interrupts, and what it leaves alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from backends.types import GenerationChunk
from server.http.errors import RequestTimeout
from server.runtime import deadline
from server.runtime.deadline import with_deadline


class Paced:
    """A stream of chunks ``gap_s`` apart that records whether it was closed."""

    def __init__(self, gap_s: float, count: int = 1000) -> None:
        self.gap_s = gap_s
        self.count = count
        self.closed = False

    async def stream(self) -> AsyncIterator[GenerationChunk]:
        try:
            for i in range(self.count):
                await asyncio.sleep(self.gap_s)
                yield GenerationChunk(f"t{i}", 1)
        finally:
            self.closed = True


async def test_chunks_pass_through_until_the_stream_ends() -> None:
    source = Paced(0.001, count=5)
    got = [c.text async for c in with_deadline(source.stream(), 5.0)]
    assert got == ["t0", "t1", "t2", "t3", "t4"]
    assert source.closed


async def test_a_wait_past_the_deadline_is_a_timeout_and_closes_the_stream() -> None:
    source = Paced(0.02)
    got: list[str] = []
    with pytest.raises(RequestTimeout, match=r"0\.15 s limit"):
        async for chunk in with_deadline(source.stream(), 0.15):
            got.append(chunk.text)
    assert 2 <= len(got) < 10
    assert source.closed
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the alarm's cancel was taken back


async def test_the_consumers_own_work_is_never_interrupted() -> None:
    """Past the deadline during the consumer's work between chunks: that work finishes, and the
    next wait is refused."""
    stream = with_deadline(Paced(0.001).stream(), 0.05)
    assert (await anext(stream)).text == "t0"
    await asyncio.sleep(0.1)  # a slow send to the client, past the deadline: not cancelled
    with pytest.raises(RequestTimeout):
        await anext(stream)


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    """The client going away cancels the task: that must not be reported as a timeout."""
    source = Paced(10.0)
    got: list[BaseException] = []

    async def consume() -> None:
        try:
            async for _ in with_deadline(source.stream(), 60.0):
                pass
        except BaseException as exc:
            got.append(exc)
            raise

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert isinstance(got[0], asyncio.CancelledError)
    assert source.closed


async def test_a_cancellation_together_with_the_deadline_stays_a_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client goes away in the very loop turn the deadline passes (made to happen by
    cancelling the task from the alarm itself, just before it rings)."""
    ring = deadline._Alarm.fire

    def client_gone_then_ring(alarm: deadline._Alarm) -> None:
        assert alarm.waiting is not None
        alarm.waiting.cancel()
        ring(alarm)

    monkeypatch.setattr(deadline._Alarm, "fire", client_gone_then_ring)
    source = Paced(10.0)

    async def consume() -> None:
        async for _ in deadline.with_deadline(source.stream(), 0.05):
            pass

    task = asyncio.create_task(consume())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.closed


async def test_the_first_chunk_may_be_awaited_by_another_task() -> None:
    """Generation.start pulls the first chunk in a task of its own when a request has n > 1."""
    stream = with_deadline(Paced(0.001).stream(), 0.2)

    async def first() -> GenerationChunk:
        return await anext(stream)

    assert (await asyncio.create_task(first())).text == "t0"
    with pytest.raises(RequestTimeout):
        async for _ in stream:
            pass
