"""The llama.cpp engine in its own process vs inside the server: what the pipe costs.

    .venv/bin/python -m bench.engine_process [--clients 1,8] [--tokens 64] [--rounds 2] [--repeats 2]

Two ``quantserve serve`` processes on the same GGUF, one with ``engine_process: false`` (the
engine in the server) and one with ``engine_process: true`` (the default: a child process, one
pipe message per engine step). Each gets the load of ``bench.llama_batching`` (C concurrent
clients streaming greedy chat completions) in turns A B B A ... so background load drifting over
the run hits both alike; the table shows tokens/s and TTFT p50 of each, and the process engine's
ratio to the in-process one (targets: tokens/s within 3%, TTFT p50 within +2 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench.common import QuantserveProcess, default_model_path
from bench.llama_batching import Stream, combine, run_level

log = logging.getLogger("bench")
SYSTEMS = {"in-process": False, "engine process": True}


def start(args: argparse.Namespace, engine_process: bool, workdir: Path) -> QuantserveProcess:
    opts = {"n_ctx": args.n_ctx, "parallel": args.parallel, "n_threads": args.threads}
    opts["engine_process"] = engine_process
    config = (
        f"models:\n  - id: bench\n    path: {args.model}\n    backend: llama_cpp\n    options: {json.dumps(opts)}\n"
    )
    workdir.mkdir()
    return QuantserveProcess(config, workdir)


def render(results: dict[int, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| clients | in-process tok/s | engine process tok/s | ratio | in-process TTFT p50 | engine process "
        "TTFT p50 | difference | failed streams |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for clients, row in results.items():
        a, b = row["in-process"], row["engine process"]
        failed = a["bad streams"] + b["bad streams"]
        lines.append(
            f"| {clients} | {a['tok/s']:.1f} | {b['tok/s']:.1f} | {b['tok/s'] / a['tok/s']:.3f}x "
            f"| {a['ttft p50'] * 1000:.1f} ms | {b['ttft p50'] * 1000:.1f} ms "
            f"| {(b['ttft p50'] - a['ttft p50']) * 1000:+.1f} ms | {failed:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="requests per client per turn")
    parser.add_argument("--repeats", type=int, default=2, help="A B pairs per level (run A B B A ...)")
    parser.add_argument("--ignore-eos", action="store_true", help="every stream runs to --tokens")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    results: dict[int, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        urls = {}
        for i, (name, engine_process) in enumerate(SYSTEMS.items()):
            server = start(args, engine_process, Path(tmp) / str(i))
            stack.callback(server.close)
            urls[name] = server.url
        for clients in (int(c) for c in args.clients.split(",")):
            runs: dict[str, list[tuple[float, list[Stream]]]] = {name: [] for name in urls}
            order = list(urls)
            for turn in range(args.repeats):
                for name in order if turn % 2 == 0 else order[::-1]:
                    log.info("%s: %d clients, turn %d", name, clients, turn + 1)
                    level = run_level(urls[name], clients, args.tokens, args.rounds, "greedy", args.ignore_eos)
                    runs[name].append(asyncio.run(level))
            results[clients] = {name: combine(got) for name, got in runs.items()}
    sys.stdout.write(render(results))


if __name__ == "__main__":
    main()
