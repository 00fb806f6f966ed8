"""Entry point of the engine process: ``python -m backends.llama_cpp.engine_start FD LABEL``.

Starting an engine is mostly the interpreter importing numpy, pydantic and llama-cpp-python
(~0.4 s of CPU against ~0.1 s for mapping a small model and building its context). On a busy
machine that competes with the models already serving for the same cores: loading a model
beside a streaming one doubled the streaming one's inter-token latency p95 on 2 cores. So the
imports run in a thread of lowered priority, which takes only what the serving engines leave.
Linux nice values are per thread, and an unprivileged thread can never take its priority back,
so only that thread is lowered: the engine's own threads are started afterwards by the main
thread (``engine_child.main``), at normal priority.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

# Low enough that serving engines win a contended core, high enough to finish on an idle one.
IMPORT_NICE = 10


def lower_this_thread() -> bool:
    """Raise the calling thread's nice value to IMPORT_NICE (never lower it); False where the
    platform has no per-thread priority (only Linux does) or refuses."""
    if sys.platform != "linux":
        return False
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < IMPORT_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, IMPORT_NICE)
    except OSError:
        return False
    return True


def _import_engine() -> None:
    lower_this_thread()
    # A failure here is raised again, with its traceback, by the main thread's own import.
    with contextlib.suppress(Exception):
        import backends.llama_cpp.batched
        import backends.llama_cpp.embedding
        import backends.llama_cpp.engine_child  # noqa: F401


def main() -> None:
    # Ctrl-C reaches the whole process group: the server decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    importer = threading.Thread(target=_import_engine, name="engine-import")
    importer.start()
    importer.join()
    from backends.llama_cpp import engine_child

    engine_child.main(int(sys.argv[1]))


if __name__ == "__main__":
    main()
