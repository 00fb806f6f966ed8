"""Shared bench helpers: start a quantserve process, time a streamed completion."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

_SSE_LINE_END = re.compile(r"\r\n|\r|\n")


def default_model_path() -> Path:
    """The default GGUF where ``quantserve models prepare`` puts it."""
    return Path.home() / ".cache" / "quantserve" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


async def sse_lines(resp: httpx.Response) -> AsyncIterator[str]:
    """An event stream's lines, ended by CR, LF or CRLF only, as the SSE spec has them.

    httpx's ``aiter_lines`` also ends a line at U+0085, U+2028 or U+2029 (``str.splitlines``),
    which JSON carries unescaped: a sampled token holding one cut an event in two."""
    rest = ""
    async for text in resp.aiter_text():
        *lines, rest = _SSE_LINE_END.split(rest + text)
        for line in lines:
            yield line
    if rest:
        yield rest


def cpu_seconds(pid: int | None) -> tuple[float, float]:
    """CPU time (user + system) of process ``pid`` alone, and of it with its living children
    (quantserve's engine processes); (nan, nan) for no process or where /proc cannot tell."""

    def own(p: int) -> float:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    if pid is None:
        return math.nan, math.nan
    try:
        alone = own(pid)
        kids = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
        return alone, alone + sum(own(k) for k in kids)
    except (OSError, ValueError, IndexError):
        return math.nan, math.nan


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class QuantserveProcess:
    """``quantserve serve --config FILE`` on a free port, until ``close``."""

    def __init__(
        self,
        config_text: str,
        workdir: Path,
        ready_timeout: float = 300,
        env: dict[str, str] | None = None,
        name: str = "bench",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / f"{name}-config.yaml"
        config.write_text(config_text)
        self._log_path = workdir / f"{name}-server.log"
        self._log = self._log_path.open("wb")
        cmd = [sys.executable, "-m", "server", "serve", "--port", str(self.port), "--config", str(config)]
        cmd += ["--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"quantserve exited early, see {self._log_path}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("quantserve did not become ready")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self._log.close()


@dataclass(frozen=True)
class StreamTiming:
    ttft: float  # request sent -> first content
    decode_seconds: float  # first content -> last content
    tokens: int  # completion tokens (from usage)

    @property
    def decode_tps(self) -> float:
        # The first token belongs to prefill; decode speed counts the ones after it.
        return (self.tokens - 1) / self.decode_seconds if self.decode_seconds > 0 else 0.0


def stream_completion(client: httpx.Client, url: str, body: dict[str, Any]) -> StreamTiming:
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", f"{url}/v1/completions", json=payload, timeout=600) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk["choices"] and chunk["choices"][0]["text"]:
                now = time.perf_counter()
                first = first or now
                last = now
    return StreamTiming(first - start, last - first, tokens)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
