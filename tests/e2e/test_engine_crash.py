"""A native crash of one model's llama.cpp engine process, with real signals, in a real server.

Two models (the default GGUF twice, under two ids) stream side by side; then one model's engine
process gets SIGSEGV (what a bad native access raises) or SIGKILL (what the OOM killer sends).
That model's running stream must end with an in-stream ``backend_unavailable`` error, its new
requests must get 503 ``backend_unavailable`` until the supervisor has restarted it, and then
it must serve again; the other model must not fail a single request throughout.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.slow
PROMPT = [{"role": "user", "content": "List 300 different animals, one per line."}]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("crash")
    config = workdir / "two.yaml"
    options = "{n_ctx: 512, parallel: 2, n_threads: 1}"
    config.write_text(
        "health_interval_s: 0.2\nrestart_backoff_s: 0.2\nmax_restarts: 3\nmodels:\n"
        f"  - {{id: crashy, path: {model_path}, options: {options}}}\n"
        f"  - {{id: steady, path: {model_path}, options: {options}}}\n"
    )
    srv = Server(["--config", str(config)], workdir / "server.log")
    try:
        srv.wait_ready(timeout=300)
        yield srv
    finally:
        engines = engine_pids(srv.proc.pid)
        srv.stop()  # SIGTERM: the server closes its engines on the way out
    assert srv.proc.returncode == 0
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in engines) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in engines if Path(f"/proc/{pid}").exists()], "engine processes outlived the server"


def engine_pids(server_pid: int, model_id: str | None = None) -> list[int]:
    """The server's engine processes (their command line ends with the model id)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        is_engine = ppid == server_pid and "backends.llama_cpp.engine_start" in argv
        if is_engine and (model_id is None or model_id in argv):
            found.append(int(entry.name))
    return found


def chat(model: str, max_tokens: int, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": PROMPT, "temperature": 0, "max_tokens": max_tokens, **extra}


class Steady:
    """Requests to the model that does not crash, back to back, counting every outcome."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=120) as client:
            while not self._stop.is_set():
                try:
                    with client.stream("POST", "/v1/chat/completions", json=chat("steady", 8, stream=True)) as r:
                        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
                    if r.status_code == 200 and lines[-1] == "data: [DONE]" and '"error"' not in "".join(lines):
                        self.ok += 1
                    else:
                        self.failures.append(f"{r.status_code}: {lines[-3:]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(180)


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL], ids=["SIGSEGV", "SIGKILL"])
def test_engine_crash_fails_only_its_model_then_it_serves_again(two_models: Server, sig: signal.Signals) -> None:
    url = two_models.base_url
    (victim,) = engine_pids(two_models.proc.pid, "crashy")
    steady = Steady(url)
    try:
        events: list[str] = []
        body = chat("crashy", 400, stream=True)
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 3:  # under way: a native crash in the middle of decoding
                        os.kill(victim, sig)
        errors = [json.loads(e)["error"] for e in events if e.startswith("{") and '"error"' in e]
        assert errors and errors[0]["code"] == "backend_unavailable", events[-3:]
        assert signal.Signals(sig).name in errors[0]["message"]

        # Refused with 503 until the supervisor has restarted the engine, then served again.
        statuses = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            resp = httpx.post(f"{url}/v1/chat/completions", json=chat("crashy", 4), timeout=120)
            statuses.append(resp.status_code)
            if resp.status_code == 200:
                break
            assert resp.status_code == 503 and resp.json()["error"]["code"] == "backend_unavailable", resp.text
            time.sleep(0.1)
        assert statuses[-1] == 200, statuses
        assert 503 in statuses  # the crash was seen, not slept through
        assert engine_pids(two_models.proc.pid, "crashy") not in ([], [victim])
    finally:
        steady.stop()
    assert steady.failures == []
    assert steady.ok > 0
