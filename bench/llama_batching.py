"""Concurrent streaming load: quantserve vs llama.cpp's llama-server vs llama-cpp-python's server.

    .venv/bin/python -m bench.llama_batching --start-llama-server --start-quantserve \
        [--system llama-cpp-python=http://127.0.0.1:8001] [--clients 1,4,8,16] [--tokens 128]

Every system gets the same load: C concurrent clients, each streaming ``--rounds`` chat
completions of ``--tokens`` tokens (include_usage), once per ``--modes`` entry: "greedy"
(temperature 0) and "sampled" (no sampling field at all: each server's own default, which is
llama-server's top_k 40 / top_p 0.95 / min_p 0.05 / temperature 0.8 chain and OpenAI's full
distribution at temperature 1 for quantserve). Those distributions end at different lengths, so
``--ignore-eos`` sends llama-server's and vLLM's ``ignore_eos``: every stream then runs to
``--tokens``, and the sampled rows compare equal work. The table shows aggregate generated tokens/s and
inter-chunk latency p50 of every system, and each quantserve's tokens/s as a ratio to the best
llama-server configuration and to llama-server's default one, all measured in the same run.
``--detail`` adds the full per-system table (TTFT and ITL p50/p95 as ratios to llama-server, tokens
per stream, and the CPU time per token of each system started here, with its child processes).

``--llama-server-variants default,backend-sampling`` starts llama-server twice, without and with
``--backend-sampling`` (the sampler chain inside the decode graph); ``--quantserve-samplers
numpy,backend`` starts quantserve once per sampling route (``QUANTSERVE_LLAMA_SAMPLER``).
``--gpu-layers`` offloads on both (``-ngl`` / ``n_gpu_layers``); ``--llama-server-bin`` uses a
llama-server built elsewhere (scripts/gpu-bench.sh builds one for CUDA).

Systems come from ``--system NAME=BASE_URL`` (already running) or are started here on the same
GGUF and thread count: ``--start-llama-server`` builds llama-server once from the llama.cpp sources
vendored in the llama-cpp-python 0.3.36 sdist (cached in ~/.cache/quantserve/llama-server-build,
never in the repository), ``--start-quantserve`` runs ``quantserve serve``, and
``--start-llama-cpp-python`` runs ``python -m llama_cpp.server`` (needs llama-cpp-python[server]).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import QuantserveProcess, cpu_seconds, default_model_path, free_port, sse_lines
from toolkit.llama_tools import build_tool

log = logging.getLogger("bench")

TOPICS = (
    "a lighthouse keeper", "a lost robot", "a dragon who hates gold", "a city under the sea",
    "a time-travelling cat", "the last tree on Mars", "a haunted library", "a pirate chef",
    "a clockwork bird", "a desert caravan", "a talking mountain", "a secret garden",
    "an old violin", "a snowbound train", "a small moon", "a forgotten king",
)  # fmt: skip
REFERENCE = "llama-server"


# ---------------------------------------------------------------- starting the systems


@dataclass(frozen=True)
class System:
    url: str
    pid: int | None = None  # started here: its CPU time is measured too


@contextmanager
def process(name: str, cmd: list[str], url: str, logdir: Path) -> Iterator[System]:
    """Run ``cmd`` until the block ends; yield once ``url``/v1/models answers."""
    log_path = logdir / f"{name}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited early; see {log_path}")
                try:
                    if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not come up; see {log_path}")
                time.sleep(0.3)
            yield System(url, proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


LLAMA_SERVER_VARIANTS = {"default": (REFERENCE, []), "backend-sampling": (f"{REFERENCE} -bs", ["--backend-sampling"])}


def start_systems(args: argparse.Namespace, stack: ExitStack, logdir: Path) -> dict[str, System]:
    systems: dict[str, System] = {}
    threads, ctx, par = str(args.threads), args.n_ctx, args.parallel
    if args.start_llama_server:
        binary = args.llama_server_bin or build_tool("llama-server")
        for variant in args.llama_server_variants.split(","):
            name, extra = LLAMA_SERVER_VARIANTS[variant]
            port = free_port()
            cmd = [str(binary), "-m", str(args.model), "--host", "127.0.0.1", "--port", str(port)]
            cmd += ["-t", threads, "-tb", threads, "--parallel", str(par), "-c", str(ctx * par)]
            cmd += ["-b", str(args.n_batch), "-ub", str(args.n_batch), "-fa", "on" if args.flash_attn else "off"]
            cmd += ["-ngl", str(args.gpu_layers), "--no-webui", *extra]
            url = f"http://127.0.0.1:{port}"
            systems[name] = stack.enter_context(process(name.replace(" ", ""), cmd, url, logdir))
    if args.start_llama_cpp_python:
        port = free_port()
        cmd = [args.lcp_python, "-m", "llama_cpp.server", "--model", str(args.model), "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--n_threads", threads, "--n_ctx", str(ctx), "--n_batch", str(args.n_batch)]
        name = "llama-cpp-python"
        systems[name] = stack.enter_context(process(name, cmd, f"http://127.0.0.1:{port}", logdir))
    if args.start_quantserve:
        # The same slot count as llama-server's --parallel: both get parallel x n_ctx cells.
        opts = {"n_ctx": ctx, "n_threads": args.threads, "n_batch": args.n_batch, "flash_attn": args.flash_attn}
        opts["parallel"] = par
        if args.gpu_layers:
            opts["n_gpu_layers"] = args.gpu_layers
        opts.update(json.loads(args.quantserve_options))
        config = (
            f"models:\n  - id: bench\n    path: {args.model}\n    backend: llama_cpp\n    options: {json.dumps(opts)}\n"
        )
        samplers = args.quantserve_samplers.split(",")
        for sampler in samplers:
            name = "quantserve" if len(samplers) == 1 else f"quantserve/{sampler}"
            env = {} if sampler == "auto" else {"QUANTSERVE_LLAMA_SAMPLER": sampler}
            server = QuantserveProcess(config, logdir, env=env, name=name.replace("/", "-"))
            stack.callback(server.close)
            systems[name] = System(server.url, server.proc.pid)
    for spec in args.system:
        name, _, url = spec.partition("=")
        systems[name] = System(url.rstrip("/"))
    return systems


# ---------------------------------------------------------------- load


@dataclass
class Stream:
    ttft: float = 0.0
    gaps: list[float] = field(default_factory=list)  # between successive content chunks
    tokens: int = 0
    failed: bool = False  # the server cut the stream or answered an error


async def one_stream(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    topic: str,
    tokens: int,
    mode: str = "greedy",
    ignore_eos: bool = False,
) -> Stream:
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": f"Write a long story about {topic}."}],
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if mode == "greedy":
        body["temperature"] = 0
    if ignore_eos:
        body["ignore_eos"] = True
    result, chunks = Stream(), 0
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
            resp.raise_for_status()
            async for line in sse_lines(resp):
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if data.get("usage"):
                    result.tokens = data["usage"]["completion_tokens"]
                if data.get("choices") and data["choices"][0].get("delta", {}).get("content"):
                    now = time.perf_counter()
                    if chunks == 0:
                        result.ttft = now - start
                    else:
                        result.gaps.append(now - last)
                    last, chunks = now, chunks + 1
    except httpx.HTTPError:
        # Counted, not fatal: llama-cpp-python's server cuts concurrent streams (interrupt_requests).
        result.failed = True
    result.tokens = result.tokens or chunks  # a server without include_usage: one token per chunk
    return result


async def run_level(
    url: str, clients: int, tokens: int, rounds: int, mode: str, ignore_eos: bool = False
) -> tuple[float, list[Stream]]:
    """``clients`` concurrent clients, ``rounds`` requests each; returns (aggregate tokens/s, streams)."""
    # A fresh connection per request: llama-server's HTTP library drops idle keep-alive
    # connections after a stream, which httpx would otherwise reuse and see fail.
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=no_reuse) as client:
        model = (await client.get(f"{url}/v1/models")).json()["data"][0]["id"]
        await one_stream(client, url, model, "a warm-up", 8)

        async def worker(i: int) -> list[Stream]:
            topics = [TOPICS[(i + r) % len(TOPICS)] for r in range(rounds)]
            return [await one_stream(client, url, model, topic, tokens, mode, ignore_eos) for topic in topics]

        start = time.perf_counter()
        per_client = await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - start
    streams = [s for group in per_client for s in group]
    return sum(s.tokens for s in streams) / wall, streams


# ---------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(tps: float, streams: list[Stream]) -> dict[str, float]:
    ttfts = [s.ttft for s in streams]
    gaps = [g for s in streams for g in s.gaps]
    return {
        "tok/s": tps,
        "ttft p50": pct(ttfts, 0.5),
        "ttft p95": pct(ttfts, 0.95),
        "itl p50": pct(gaps, 0.5),
        "itl p95": pct(gaps, 0.95),
        "bad streams": float(sum(1 for s in streams if s.failed or s.tokens == 0)),
        "streams": float(len(streams)),
        # Sampled streams may end early (EOS): fewer tokens per stream, more prefill per token.
        "tokens/stream": sum(s.tokens for s in streams) / len(streams) if streams else 0.0,
    }


def combine(runs: list[tuple[float, list[Stream]]]) -> dict[str, float]:
    """One system's turns at one level as one row: tokens/s over all turns' tokens and time; the
    turns' own tokens/s are kept (``turn N``) for the spread of the ratios."""
    tokens = [sum(s.tokens for s in streams) for _, streams in runs]
    wall = sum(n / tps for n, (tps, _) in zip(tokens, runs, strict=True) if tps)
    row = summarize(sum(tokens) / wall if wall else 0.0, [s for _, streams in runs for s in streams])
    row.update({f"turn {i}": tps for i, (tps, _) in enumerate(runs)})
    return row


def spread(ours: dict[str, float], ref: dict[str, float]) -> str:
    """The lowest and highest ratio of one turn's tokens/s to the reference's in the same turn."""
    ratios = [ours[k] / ref[k] for k in ours if k.startswith("turn ") and ref.get(k)]
    return f"{min(ratios):.2f}-{max(ratios):.2f}x" if len(ratios) > 1 else "-"


def render(results: dict[str, dict[int, dict[str, float]]]) -> str:
    metrics = ("tok/s", "ttft p50", "ttft p95", "itl p50", "itl p95")
    head = f"| system | clients | {' | '.join(metrics)} | tokens/stream | CPU ms/token (server process) "
    head += "| failed or empty streams |"
    lines = [head, "|" + "---|" * (5 + len(metrics))]
    for name, levels in results.items():
        for clients, row in levels.items():
            ref = results.get(REFERENCE, {}).get(clients)
            cells = []
            for m in metrics:
                unit = "" if m == "tok/s" else " s"
                ratio = f" ({row[m] / ref[m]:.2f}x)" if ref and ref[m] else ""
                cells.append(f"{row[m]:.3f}{unit}{ratio}" if unit else f"{row[m]:.1f}{ratio}")
            bad = f"{row['bad streams']:.0f}/{row['streams']:.0f}"
            cpu = f"{1000 * row['cpu/token']:.2f} ({1000 * row['server cpu/token']:.2f})"
            lines.append(f"| {name} | {clients} | {' | '.join(cells)} | {row['tokens/stream']:.0f} | {cpu} | {bad} |")
    return "\n".join(lines) + "\n"


def render_ratios(results: dict[str, dict[str, dict[int, dict[str, float]]]]) -> str:
    """One row per (mode, clients): every system's tok/s (ITL p50), then each quantserve's ratios."""
    first = next(iter(results.values()))
    names = list(first)
    refs = [n for n in names if n.startswith(REFERENCE)]
    ours = [n for n in names if n.startswith("quantserve")]
    head = ["mode", "clients", *(f"{n} tok/s (ITL p50)" for n in names)]
    for n in ours:
        head += [f"{n} / best llama-server", f"{n} / {REFERENCE}"] if len(refs) > 1 else [f"{n} / {REFERENCE}"]
        head += ["per turn"] if REFERENCE in names else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode, systems in results.items():
        for clients in systems[names[0]]:
            rows = {n: systems[n][clients] for n in names}
            cells = [mode, str(clients)]
            cells += [f"{r['tok/s']:.0f} ({1000 * r['itl p50']:.1f} ms)" for r in rows.values()]
            best = max((rows[n]["tok/s"] for n in refs), default=0.0)
            default = rows[REFERENCE]["tok/s"] if REFERENCE in rows else 0.0
            for n in ours:
                tps = rows[n]["tok/s"]
                ratios = [best, default] if len(refs) > 1 else [default]
                cells += [f"{tps / ref:.2f}x" if ref else "-" for ref in ratios]
                cells += [spread(rows[n], rows[REFERENCE])] if REFERENCE in rows else []
            lines.append("| " + " | ".join(cells) + " |")
    bad = sum(int(r["bad streams"]) for systems in results.values() for lv in systems.values() for r in lv.values())
    lines.append(f"\nfailed or empty streams: {bad}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--system", action="append", default=[], metavar="NAME=URL", help="an already running server")
    parser.add_argument("--start-llama-server", action="store_true")
    parser.add_argument("--start-quantserve", action="store_true")
    parser.add_argument(
        "--quantserve-options", default="{}", help="JSON merged into the model options, e.g. '{\"parallel\": 8}'"
    )
    parser.add_argument("--llama-server-bin", type=Path, help="default: built from the pinned sdist (CPU)")
    parser.add_argument("--llama-server-variants", default="default", help="default,backend-sampling")
    parser.add_argument("--quantserve-samplers", default="auto", help="auto or a list of numpy,backend,native")
    parser.add_argument("--gpu-layers", type=int, default=0, help="layers to offload on every system")
    parser.add_argument("--modes", default="greedy,sampled")
    parser.add_argument("--detail", action="store_true", help="also print the per-system latency table")
    parser.add_argument("--start-llama-cpp-python", action="store_true")
    parser.add_argument("--lcp-python", default=sys.executable, help="python with llama-cpp-python[server]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8, help="slots, for llama-server and quantserve alike")
    parser.add_argument("--n-ctx", type=int, default=1024, help="context per request")
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--flash-attn", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--clients", default="1,4,8,16")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--ignore-eos",
        action="store_true",
        help="send ignore_eos: every stream runs to --tokens, so sampled requests are like for like",
    )
    parser.add_argument("--rounds", type=int, default=2, help="requests per client per level and turn")
    parser.add_argument("--repeats", type=int, default=2, help="turns per level, systems in turn A B, B A, ...")
    parser.add_argument("--log-dir", help="keep the servers' logs here (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress
    levels = [int(c) for c in args.clients.split(",")]
    results: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        logdir = Path(args.log_dir or tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        systems = start_systems(args, stack, logdir)
        if not systems:
            parser.error("no system: pass --system NAME=URL or one of the --start-* flags")
        # Levels outermost, systems inner, in turns A B, B A, ...: background load drifting over
        # the run (this machine's speed varies by 20 % from one minute to the next) hits all alike.
        order = list(systems)
        for mode in args.modes.split(","):
            for clients in levels:
                runs: dict[str, list[tuple[float, list[Stream]]]] = {name: [] for name in systems}
                cpu = {name: [0.0, 0.0] for name in systems}  # the server process, with its children
                for turn in range(args.repeats):
                    for name in order if turn % 2 == 0 else order[::-1]:
                        log.info("%s, %s: %d clients, turn %d", name, mode, clients, turn + 1)
                        system = systems[name]
                        before = cpu_seconds(system.pid)
                        level = run_level(system.url, clients, args.tokens, args.rounds, mode, args.ignore_eos)
                        runs[name].append(asyncio.run(level))
                        used = [b - a for a, b in zip(before, cpu_seconds(system.pid), strict=True)]
                        cpu[name] = [total + u for total, u in zip(cpu[name], used, strict=True)]
                for name, got in runs.items():
                    row = combine(got)
                    tokens = sum(s.tokens for _, streams in got for s in streams)
                    row["server cpu/token"], row["cpu/token"] = (c / tokens if tokens else math.nan for c in cpu[name])
                    results.setdefault(mode, {}).setdefault(name, {})[clients] = row
    if args.detail:
        for mode, by_system in results.items():
            sys.stdout.write(f"\n{mode}:\n{render(by_system)}")
    sys.stdout.write("\n" + render_ratios(results))


if __name__ == "__main__":
    main()
