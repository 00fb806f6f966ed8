"""Prefill and decode speed, and peak memory, of one model on the engine that serves it.

Each model is measured in its own process (``python -m toolkit.speed PATH``, one JSON line out)
so its peak resident memory is its own and a vLLM engine's processes are gone afterwards. The
engine is started through the backend registry exactly as the server starts it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backends.device import detect_device
from backends.errors import QuantserveError
from backends.formats import detect_format
from backends.registry import create_backend
from backends.types import GenerationRequest, ModelFormat, ModelSpec, SamplingParams

logger = logging.getLogger(__name__)

PREFILL_CHARS = 2000  # about 500 tokens of the held-out text
DECODE_TOKENS = 64
REPEATS = 3


@dataclass(frozen=True, slots=True)
class Speed:
    backend: str
    prefill_tok_s: float | None
    decode_tok_s: float | None
    peak_rss_bytes: int | None
    error: str | None = None  # why the engine here cannot run it (e.g. "needs CUDA")


def default_options(fmt: ModelFormat, threads: int) -> dict[str, Any]:
    if fmt is ModelFormat.GGUF:
        return {"n_ctx": 1024, "parallel": 1, "n_threads": threads}
    return {"max_model_len": 1024, "kv_cache_memory_gib": 1}


async def _timed(backend: Any, prompt: str, max_tokens: int) -> tuple[float, float, int, int]:
    """(time to first chunk, time of last chunk, prompt tokens, completion tokens)."""
    req = GenerationRequest(
        request_id=f"speed-{time.monotonic_ns()}",
        prompt=prompt,
        sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )
    started = time.perf_counter()
    first = last = 0.0
    queue = 0.0
    prompt_tokens = completion = 0
    async for chunk in backend.generate(req):
        now = time.perf_counter() - started
        if not first:
            first, queue = now, chunk.queue_s or 0.0
        last = now
        if chunk.usage is not None:
            prompt_tokens, completion = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
    return first - queue, last - queue, prompt_tokens, completion


async def measure_here(path: Path, *, threads: int, options: dict[str, Any] | None = None) -> Speed:
    from toolkit.perplexity import heldout_text

    fmt = detect_format(path)
    spec = ModelSpec(id=path.name, path=path, format=fmt, options=options or default_options(fmt, threads))
    backend = create_backend(spec, detect_device())
    try:
        await backend.start()
    except QuantserveError as exc:
        return Speed(backend.name, None, None, None, error=exc.message)
    try:
        text = heldout_text()
        await _timed(backend, text[:200], 4)  # warm-up
        prefill: list[float] = []
        decode: list[float] = []
        # Best of REPEATS: on a shared machine another process can stall a run many times over
        # (llama.cpp's threads wait for each other at every layer); the best run is the engine's.
        for _ in range(REPEATS):
            ttft, _, n_prompt, _ = await _timed(backend, text[:PREFILL_CHARS], 1)
            first, last, _, n_out = await _timed(backend, text[5000:5400], DECODE_TOKENS)
            if ttft > 0:
                prefill.append(n_prompt / ttft)
            if n_out > 1 and last > first:
                decode.append((n_out - 1) / (last - first))
    finally:
        await backend.stop()
    return Speed(backend.name, max(prefill, default=None), max(decode, default=None), _peak_rss())


def _peak_rss() -> int:
    """This process's high-water mark (VmHWM: ru_maxrss would still count the parent's pages
    from before exec), or that of a child (vLLM's engine process), whichever is larger."""
    own = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            own = int(line.split()[1])
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024  # kilobytes on Linux


def measure(path: Path, *, threads: int = 2, timeout_s: float = 900) -> Speed:
    """Run ``measure_here`` in a fresh interpreter; a crash or timeout becomes ``Speed.error``."""
    cmd = [sys.executable, "-m", "toolkit.speed", str(path), "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return Speed("?", None, None, None, error=f"no answer within {timeout_s:.0f} s")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Speed("?", None, None, None, error=f"exit {proc.returncode}: {tail[:200]}")
    return Speed(**json.loads(lines[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure one model's speed (prints one JSON line).")
    parser.add_argument("path", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = asyncio.run(measure_here(args.path.expanduser(), threads=args.threads))
    sys.stdout.write(json.dumps(asdict(result)) + "\n")


if __name__ == "__main__":
    main()
