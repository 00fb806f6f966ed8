"""What crosses the pipe between the server and a llama.cpp engine process.

Every message is one pickled object in ``multiprocessing.connection.Connection`` framing: the
engine process reads and writes with a ``Connection``; the server frames its own (``frame``) and
splits what it reads (``Frames``), so its event loop never blocks on a partial message and reads
a step with one ``recv``.

- server -> engine: first a ``ChildConfig``; then ``("generate", rid, request_id, prompt_tokens, sampling, constraint,
  queue_timeout_s)``, ``("embed", rid, inputs)``, ``("cancel", rid)``, ``("close",)``.
- engine -> server: first ``("ready", EngineFacts)`` or ``("failed", Failure)``; then
  ``("step", [(rid, item), ...], stats)``: ONE message per engine step carrying every
  request's new item (a chunk, a ``Failure``, or an embedding result), never one per token.
  Chunks are the engine thread's own, one per sampled token (empty text while the text is held
  back); the server merges them into deltas (``slots.Deltas``) as the in-process engine's
  consumer does.

The per-token items travel as plain data (``to_wire``): a one-token chunk with nothing but text
as its ``str``, the stats as a tuple. Unpickling a dataclass looks up its class and sets each
field through ``_dataclass_setstate``; in the server, whose caches the decode threads keep
evicting, that cost ~50 us per step message, a tenth of the server's whole per-token work.

``rid`` numbers a request on this pipe; the client's request id travels once, for the logs.
Errors cross as ``Failure`` rather than pickled exceptions: pickling rebuilds an exception from
its ``args`` alone, which would drop ``param`` and ``retry_after`` (the 400's field, the 429's
Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import operator
import pickle
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends import errors
from backends.types import EngineStats, GenerationChunk

Vectors = list[tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class Failure:
    """An exception as data: its class name (one of ``backends.errors``), message and extras."""

    kind: str
    message: str
    param: str | None = None
    retry_after: float | None = None

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        if isinstance(exc, errors.QuantserveError):
            retry = exc.retry_after if isinstance(exc, errors.Overloaded) else None
            return cls(type(exc).__name__, exc.message, exc.param, retry)
        # Anything else is llama.cpp or a bug: keep its type name in the text, as a log would.
        return cls("RuntimeError", f"{type(exc).__name__}: {exc}")

    def exception(self) -> Exception:
        cls = getattr(errors, self.kind, None)
        if not (isinstance(cls, type) and issubclass(cls, errors.QuantserveError)):
            return RuntimeError(self.message)
        if issubclass(cls, errors.Overloaded):
            return cls(self.message, retry_after=self.retry_after or 1.0)
        return cls(self.message, param=self.param)


Item = GenerationChunk | Vectors | Failure
WireItem = Item | str  # a str: a one-token chunk of plain text (see ``to_wire``)
WireStats = tuple[int, int, float | None]


# Every chunk field but text and tokens, read in one call, and their values on a plain chunk.
# Derived from the dataclass, so a field GenerationChunk gains is checked too.
_REST = operator.attrgetter(*(f.name for f in dataclasses.fields(GenerationChunk) if f.name not in ("text", "tokens")))
_PLAIN_REST = _REST(GenerationChunk())


def to_wire(item: Item) -> WireItem:
    """A one-token chunk that carries only text crosses as that text (the common case by far)."""
    if type(item) is GenerationChunk and item.tokens == 1 and _REST(item) == _PLAIN_REST:
        return item.text
    return item


def from_wire(item: WireItem) -> Item:
    return GenerationChunk(item, 1) if isinstance(item, str) else item


def stats_to_wire(stats: EngineStats) -> WireStats:
    return (stats.running, stats.waiting, stats.kv_cache_usage)


def stats_from_wire(stats: WireStats) -> EngineStats:
    return EngineStats(*stats)


@dataclass(frozen=True, slots=True)
class ChildConfig:
    """The first message, server -> engine: what to load and how."""

    model_path: Path
    engine: dict[str, Any]  # BatchedEngine's keyword arguments
    embedding_pooling: str
    log_level: int


@dataclass(frozen=True, slots=True)
class EngineFacts:
    """What the server needs to know about a loaded engine, sent once by the engine process."""

    n_ctx: int
    metadata: Mapping[str, str]
    bos_text: str
    eos_text: str
    fim_tokens: tuple[int, int, int] | None
    embedding_size: int


_SIZE = struct.Struct("!i")
_BIG_SIZE = struct.Struct("!Q")  # after a size of -1: a message of 2 GiB or more


def frame(msg: object) -> bytes:
    """``msg`` as a ``Connection`` receives it: its size, then its pickle."""
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > 0x7FFFFFFF:
        return _SIZE.pack(-1) + _BIG_SIZE.pack(len(data)) + data
    return _SIZE.pack(len(data)) + data


class Frames:
    """The messages in the bytes a ``Connection`` wrote, fed in whatever pieces they arrived."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Every message ``data`` completes, in order; a partial one waits for the next feed."""
        buf = self._buf
        buf += data
        out: list[Any] = []
        pos = 0
        while len(buf) - pos >= _SIZE.size:
            (size,) = _SIZE.unpack_from(buf, pos)
            start = pos + _SIZE.size
            if size == -1:
                if len(buf) - start < _BIG_SIZE.size:
                    break
                (size,) = _BIG_SIZE.unpack_from(buf, start)
                start += _BIG_SIZE.size
            if len(buf) - start < size:
                break
            out.append(pickle.loads(buf[start : start + size]))
            pos = start + size
        del buf[:pos]
        return out


class Demux:
    """Routes each step's items to the per-request asyncio queues they belong to.

    ``dispatch`` runs where the pipe is read, normally the requests' own event loop, which puts
    the items in their queues at once; a request on another loop gets them through one
    thread-safe hand-off per loop and step.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self._open: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue[WireItem]]] = {}
        self._failure: Failure | None = None

    def open(self) -> tuple[int, asyncio.Queue[WireItem]]:
        """A new request id and its queue, on the running loop; refused once the engine is gone."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[WireItem] = asyncio.Queue()
        with self._lock:
            if self._failure is not None:
                raise self._failure.exception()
            self._next += 1
            self._open[self._next] = (loop, queue)
            return self._next, queue

    def close(self, rid: int) -> None:
        with self._lock:
            self._open.pop(rid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def dispatch(self, items: Iterable[tuple[int, WireItem]], here: asyncio.AbstractEventLoop | None = None) -> None:
        """``here``: the running loop dispatching, if any (its requests need no hand-off)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[WireItem], WireItem]]] = {}
        with self._lock:
            for rid, item in items:
                target = self._open.get(rid)
                if target is not None:  # else the request was closed meanwhile: nobody reads it
                    by_loop.setdefault(target[0], []).append((target[1], item))
        for loop, group in by_loop.items():
            if loop is here:
                _put_all(group)
                continue
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody will read these
                loop.call_soon_threadsafe(_put_all, group)

    def fail_all(self, failure: Failure) -> None:
        """The engine is gone: every open request gets ``failure``, and so does every new one."""
        with self._lock:
            self._failure = failure
            rids = list(self._open)
        self.dispatch((rid, failure) for rid in rids)


def _put_all(group: list[tuple[asyncio.Queue[WireItem], WireItem]]) -> None:
    for queue, item in group:
        queue.put_nowait(item)
