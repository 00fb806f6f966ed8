"""A real ``quantserve serve`` process on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from backends.llama_cpp.process_engine import without_vllm_preload


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, args: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        cmd = [sys.executable, "-m", "server", "serve", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=server_env())

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {timeout}s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default command: no model given, so the embedded default model is served."""
    srv = Server(["--api-key", "sk-test"], tmp_path_factory.mktemp("server") / "server.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def server_env() -> dict[str, str]:
    """This process's environment as a fresh shell would give it: an earlier test that started a
    vLLM engine in-process left PyTorch's libgomp in LD_PRELOAD."""
    return without_vllm_preload(dict(os.environ))


MakeClient = Callable[..., openai.OpenAI]


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """``make_client(server, key=...)``: an openai SDK client closed after the test. A client left
    to the garbage collector closes its sockets during some later test, as a ResourceWarning there."""
    made: list[openai.OpenAI] = []

    def make(server: Server, key: str = "sk-test") -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0))
        return made[-1]

    yield make
    for client in made:
        client.close()
