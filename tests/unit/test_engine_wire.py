"""The engine pipe's wire format and the demultiplexing of step messages to request queues."""

from __future__ import annotations

import asyncio
import pickle
import signal
import socket
import threading
from multiprocessing.connection import Connection

import pytest

from backends.errors import BackendUnavailable, InvalidRequest, Overloaded, QueueTimeout
from backends.llama_cpp.engine_wire import (
    Demux,
    Failure,
    Frames,
    WireItem,
    frame,
    from_wire,
    stats_from_wire,
    stats_to_wire,
    to_wire,
)
from backends.llama_cpp.process_engine import exit_description
from backends.types import EngineStats, GenerationChunk, Usage


def cross(exc: BaseException) -> Exception:
    """What the server raises for ``exc`` raised in the engine process: pickled across the pipe."""
    failure = pickle.loads(pickle.dumps(Failure.of(exc)))
    assert isinstance(failure, Failure)
    return failure.exception()


def test_errors_keep_their_type_and_extras_across_the_pipe() -> None:
    full = cross(Overloaded("all 2 slots are busy", retry_after=7.0))
    assert type(full) is Overloaded and full.retry_after == 7.0 and str(full) == "all 2 slots are busy"
    timeout = cross(QueueTimeout("waited 1 s", retry_after=3.0))
    assert type(timeout) is QueueTimeout and timeout.retry_after == 3.0
    bad = cross(InvalidRequest("the grammar does not compile", param="response_format"))
    assert type(bad) is InvalidRequest and bad.param == "response_format"
    assert type(cross(BackendUnavailable("gone"))) is BackendUnavailable


def test_a_foreign_exception_becomes_a_runtime_error_naming_its_type() -> None:
    err = cross(ZeroDivisionError("division by zero"))
    assert type(err) is RuntimeError and str(err) == "ZeroDivisionError: division by zero"
    # A class name that is not one of ours is never looked up as one.
    assert type(Failure("Exception", "x").exception()) is RuntimeError


def chunk(text: str) -> GenerationChunk:
    return GenerationChunk(text, 1)


async def drain(queue: asyncio.Queue[WireItem]) -> list[WireItem]:
    await asyncio.sleep(0.05)  # let the loop run the hand-off
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def test_one_step_message_reaches_each_request_in_order() -> None:
    demux = Demux()
    a, qa = demux.open()
    b, qb = demux.open()
    gone, _ = demux.open()
    demux.close(gone)
    final = GenerationChunk("", 0, "stop", Usage(3, 2))
    step = [(a, chunk("x")), (b, chunk("y")), (gone, chunk("lost")), (99, chunk("unknown")), (a, final)]
    # From another thread, as the pipe reader does.
    thread = threading.Thread(target=demux.dispatch, args=(step,))
    thread.start()
    thread.join()
    assert await drain(qa) == [chunk("x"), final]
    assert await drain(qb) == [chunk("y")]


def test_frames_split_what_a_connection_wrote_however_it_arrives() -> None:
    a, b = socket.socketpair()
    with a, b, Connection(a.detach()) as writer:
        messages = [("step", [(1, chunk("x"))], None), ("step", [], None), "é" * 40_000]
        for message in messages:
            writer.send(message)
        stream = b""
        while len(stream) < sum(len(frame(m)) for m in messages):
            stream += b.recv(1 << 16)
    frames = Frames()
    got = [m for i in range(0, len(stream), 7) for m in frames.feed(stream[i : i + 7])]
    assert got == messages  # byte by byte (7 at a time), and a message larger than one read
    assert Frames().feed(frame(messages[0]) + frame(messages[1])) == messages[:2]


async def test_dispatch_on_the_requests_own_loop_needs_no_hand_off() -> None:
    demux = Demux()
    rid, queue = demux.open()
    demux.dispatch([(rid, chunk("x"))], asyncio.get_running_loop())
    assert queue.get_nowait() == chunk("x")  # already there: no loop iteration in between


async def test_a_dead_engine_fails_open_requests_and_refuses_new_ones() -> None:
    demux = Demux()
    rid, queue = demux.open()
    failure = Failure.of(BackendUnavailable("the llama.cpp engine process killed by SIGSEGV"))
    demux.fail_all(failure)
    assert await drain(queue) == [failure]
    with pytest.raises(BackendUnavailable, match="SIGSEGV"):
        demux.open()
    assert rid == 1 and len(demux) == 1  # the open request is still the caller's to close


def test_exit_description_names_the_signal() -> None:
    assert exit_description(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert exit_description(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_description(1) == "exited with status 1"
    assert exit_description(None) == "still running"


def test_chunks_cross_as_plain_data_only_when_nothing_but_one_tokens_text_is_lost() -> None:
    plain = GenerationChunk(" the", 1)
    assert to_wire(plain) == " the"
    others = [
        GenerationChunk("", 1),  # text held back: still one token, still plain
        GenerationChunk("ab", 2),
        GenerationChunk("x", 1, queue_s=0.25),
        GenerationChunk("", 0, "stop", Usage(3, 2), stop_sequence="END"),
        GenerationChunk("x", 1, reasoning="why"),
    ]
    for chunk_ in [plain, *others]:
        wired = pickle.loads(pickle.dumps(to_wire(chunk_)))
        assert from_wire(wired) == chunk_
    assert [type(to_wire(c)) for c in others] == [str] + [GenerationChunk] * 4
    stats = EngineStats(running=3, waiting=1, kv_cache_usage=0.5)
    assert stats_from_wire(pickle.loads(pickle.dumps(stats_to_wire(stats)))) == stats
