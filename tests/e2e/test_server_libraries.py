"""What native code a serving process holds: after the real start-up path on GGUF models only, no
foreign native libraries (gguf-py's import drags in OpenCV and a second OpenMP runtime, which made
llama.cpp's model load segfault), read from the live process's own memory map."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from server.runtime.model_store import DEFAULT_MODEL_ID
from tests.e2e.conftest import Server

OPENMP = re.compile(r"lib(gomp|iomp5?|omp)[-.][^/]*$")


def mapped_libraries(pid: int) -> set[str]:
    """Paths of the shared objects mapped into process ``pid``."""
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and ".so" in fields[5]:
            paths.add(fields[5].strip())
    return paths


def test_serving_process_loads_no_foreign_native_libraries(server: Server) -> None:
    reply = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        headers={"Authorization": "Bearer sk-test"},
        json={"model": DEFAULT_MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    libs = mapped_libraries(server.proc.pid)
    assert any("libllama" in p for p in libs)  # the map is the serving process's, engine loaded
    assert not [p for p in libs if "cv2" in p or "opencv" in p.lower()]
    assert not [p for p in libs if "/torch/" in p or "libtorch" in p]
    openmp = {Path(p).name for p in libs if OPENMP.search(Path(p).name)}
    assert len(openmp) <= 1, f"more than one OpenMP runtime: {sorted(openmp)}"
