"""The engine process: one model's ``BatchedEngine`` (and its embedding context) behind a pipe.

Started by ``process_engine.ProcessEngine`` as ``python -m backends.llama_cpp.engine_start FD MODEL``, a
fresh interpreter (never a fork: the server holds threads and, for a restart, a dead engine's
state; and unlike multiprocessing's "spawn" it never re-imports the server's main module), with
one end of a socket pair as FD. It reads its ``ChildConfig`` from it, loads the model, reports
``("ready", facts)`` or ``("failed", why)`` in one message, then serves requests over the pipe
(``engine_wire`` lists the messages) until told to close or the server goes away.

Messages from the server are handled on this process's event loop: a generate request is checked
and queued there (``BatchedEngine.prepare`` and ``submit``, so a refusal goes straight back). Its
tokens do not pass through that loop: the engine thread hands each step's chunks of every request
to ``_Serve.send`` (their ``Sink``), which writes them as ONE message. So a step of N sequences
costs one pickle and one write, and no thread wake-up in this process, where a wake-up per step
would take CPU from llama.cpp's own threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from multiprocessing.connection import Connection
from typing import Any

from backends.llama_cpp.engine_wire import ChildConfig, EngineFacts, Failure, Item, WireItem, stats_to_wire, to_wire
from backends.llama_cpp.slots import Item as EngineItem
from backends.llama_cpp.slots import RequestHandle

log = logging.getLogger(__name__)


def main(fd: int) -> None:
    """Serve on FD; ``engine_start`` has imported what the engine needs and ignores Ctrl-C."""
    conn = Connection(fd)
    try:
        config = conn.recv()
    except EOFError:
        return  # the server gave up on us before we started
    assert isinstance(config, ChildConfig)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s [engine] %(name)s: %(message)s")
    if config.log_level > logging.DEBUG:
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    try:
        engine, embedder = _load(config)
    except BaseException as exc:
        # The server may have stopped waiting (its own vocab-only load of a broken file fails
        # first): then there is nobody to tell, and a traceback would only add noise.
        with contextlib.suppress(OSError):
            conn.send(("failed", Failure.of(exc)))
        return
    try:
        conn.send(("ready", _facts(engine, embedder.size)))
        asyncio.run(_Serve(conn, engine, embedder).run())
    finally:
        engine.close()
        conn.close()


def _load(config: ChildConfig) -> tuple[Any, Any]:
    from backends.llama_cpp.batched import BatchedEngine, _usable_cpus
    from backends.llama_cpp.embedding import EmbedConfig, Embedder, resolve_pooling

    engine = BatchedEngine(config.model_path, **config.engine)
    try:
        pooling = resolve_pooling(config.embedding_pooling, engine.metadata)
        threads = config.engine.get("n_threads") or _usable_cpus()
        # Its context is built on the first embedding request, so generation-only use pays nothing.
        cfg = EmbedConfig(engine.n_ctx, threads, bool(config.engine.get("flash_attn")), pooling)
        return engine, Embedder(engine.native, cfg)
    except BaseException:
        engine.close()
        raise


def _facts(engine: Any, embedding_size: int) -> EngineFacts:
    return EngineFacts(
        n_ctx=engine.n_ctx,
        metadata=dict(engine.metadata),
        bos_text=engine.bos_text,
        eos_text=engine.eos_text,
        fim_tokens=engine.fim_tokens,
        embedding_size=embedding_size,
    )


class _Serve:
    """Requests from the pipe, on this process's event loop; their items go back from the engine
    thread (this object is every request's ``Sink``), so a step costs no wake-up here."""

    def __init__(self, conn: Connection, engine: Any, embedder: Any) -> None:
        self._conn = conn
        self._engine = engine
        self._embedder = embedder
        self._send_lock = threading.Lock()  # the engine thread and this loop both write the pipe
        # rid -> request, until its last item is sent; the engine thread pops, this loop adds and
        # pops (a cancel), each a single dict operation, atomic under the GIL.
        self._live: dict[int, RequestHandle] = {}
        self._embeds: dict[int, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._last_stats: Any = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self._conn.fileno(), self._on_readable)
        watcher = asyncio.create_task(self._watch_stats())
        try:
            await self._stop.wait()
        finally:
            loop.remove_reader(self._conn.fileno())
            watcher.cancel()
            for task in list(self._embeds.values()):
                task.cancel()

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                self._handle(self._conn.recv())
        except (EOFError, OSError):  # the server is gone: nobody to serve, stop computing
            self._stop.set()

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "generate":
            self._generate(*msg[1:])
        elif kind == "embed":
            rid = msg[1]
            self._embeds[rid] = asyncio.create_task(self._embed(rid, msg[2]))
        elif kind == "cancel":
            req = self._live.pop(msg[1], None)
            if req is not None:
                self._engine.cancel(req)  # the engine frees the slot and its KV cells next step
            task = self._embeds.pop(msg[1], None)
            if task is not None:
                task.cancel()
        elif kind == "close":
            self._stop.set()
        else:
            log.error("unknown message %r from the server", kind)

    def _generate(self, rid: int, request_id: str, prompt: list[int], *args: Any) -> None:
        sampling, constraint, queue_timeout_s = args
        try:
            req = self._engine.prepare(request_id, prompt, sampling, constraint, self, rid)
            self._live[rid] = req  # before submit: the engine thread may finish it at once
            self._engine.submit(req, queue_timeout_s=queue_timeout_s)
        except Exception as exc:
            self._live.pop(rid, None)
            self._reply(rid, Failure.of(exc))

    async def _embed(self, rid: int, inputs: list[list[int]]) -> None:
        try:
            item: Item = await self._embedder.embed(inputs)
        except Exception as exc:
            item = Failure.of(exc)
        finally:
            self._embeds.pop(rid, None)
        self._reply(rid, item)

    def send(self, items: list[tuple[RequestHandle, EngineItem]]) -> None:
        """``Sink``, on the engine thread: a step's items, every request's together, as ONE message."""
        wire: list[tuple[int, WireItem]] = []
        for req, item in items:
            if isinstance(item, BaseException):
                wire.append((req.tag, Failure.of(item)))
            else:
                wire.append((req.tag, to_wire(item)))
                if item.finish_reason is None:
                    continue
            self._live.pop(req.tag, None)  # its last item: nothing left to cancel
        if not self._write(wire):
            raise RuntimeError("the server is gone")

    def _reply(self, rid: int, item: Item) -> None:
        if not self._write([(rid, item)]):
            self._stop.set()

    def _write(self, items: list[tuple[int, WireItem]]) -> bool:
        """False when the server is gone."""
        stats = self._engine.stats()
        self._last_stats = stats
        try:
            with self._send_lock:
                self._conn.send(("step", items, stats_to_wire(stats)))
        except OSError:
            return False
        return True

    async def _watch_stats(self) -> None:
        # Stats ride on every step message; this catches the changes no chunk carries (a request
        # leaving the queue for a slot, the last one finishing), so /metrics is never stale long.
        while True:
            await asyncio.sleep(0.25)
            with contextlib.suppress(Exception):
                if self._engine.stats() != self._last_stats and not self._write([]):
                    self._stop.set()
