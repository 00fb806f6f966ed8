"""SIGTERM: stop accepting, let in-flight streams finish within the grace period, exit 0."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server

BODY = {
    "model": "smollm2-135m-instruct",
    # Greedy, this prompt runs to any max_tokens (measured: 2000 tokens, finish "length").
    "messages": [{"role": "user", "content": "List 300 different animals, one per line."}],
    "temperature": 0,
    "stream": True,
}


def stream_in_background(url: str, max_tokens: int, started: threading.Event, out: list[str]) -> threading.Thread:
    def run() -> None:
        try:
            with httpx.stream(
                "POST", f"{url}/v1/chat/completions", json={**BODY, "max_tokens": max_tokens}, timeout=120
            ) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        out.append(line[6:])
                        if len(out) >= 5:  # well under way: the role chunk and a few tokens
                            started.set()
        except httpx.HTTPError as exc:
            out.append(f"transport error: {type(exc).__name__}")
        finally:
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def start(tmp_path: Path, grace: float) -> Server:
    os.environ["QUANTSERVE_SHUTDOWN_GRACE_S"] = str(grace)
    try:
        srv = Server([], tmp_path / "log.txt")
    finally:
        del os.environ["QUANTSERVE_SHUTDOWN_GRACE_S"]
    srv.wait_ready()
    return srv


def test_sigterm_drains_in_flight_streams_and_exits_0(tmp_path: Path) -> None:
    srv = start(tmp_path, grace=60)
    try:
        drain(srv)
    finally:
        srv.stop()


def drain(srv: Server) -> None:
    out: list[str] = []
    started = threading.Event()
    thread = stream_in_background(srv.base_url, 120, started, out)
    assert started.wait(60)
    srv.proc.send_signal(signal.SIGTERM)
    with pytest.raises(httpx.TransportError):  # no new connections once draining
        for _ in range(50):
            httpx.get(f"{srv.base_url}/health", timeout=1)
            threading.Event().wait(0.1)
    thread.join(120)
    assert srv.proc.wait(60) == 0
    assert out[-1] == "[DONE]"
    finishes = [json.loads(d)["choices"][0]["finish_reason"] for d in out[:-1] if json.loads(d)["choices"]]
    assert finishes[-1] == "length"  # the stream ran to the end, not cut
    assert "Waiting for connections to close" in srv.log_path.read_text()


def test_streams_past_the_grace_period_are_cancelled_and_the_process_still_exits_0(tmp_path: Path) -> None:
    srv = start(tmp_path, grace=0.5)
    try:
        cut(srv)
    finally:
        srv.stop()


def cut(srv: Server) -> None:
    out: list[str] = []
    started = threading.Event()
    thread = stream_in_background(srv.base_url, 2000, started, out)  # far longer than 0.5 s
    assert started.wait(60)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(30) == 0
    thread.join(30)
    assert "[DONE]" not in out  # cut, not finished
    log = srv.log_path.read_text()
    assert "Traceback" not in log
