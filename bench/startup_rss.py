"""Start-up memory: ``quantserve serve`` on the default model vs the engine it runs, alone.

    .venv/bin/python -m bench.startup_rss [--runs 3]

Three processes, each started fresh ``--runs`` times, resident set size (VmRSS) read from /proc
once each is ready to serve:

- ``quantserve serve`` with no arguments (the default model and options), after ``/ready``;
- the engine's own: a bare Python process that builds the same ``BatchedEngine`` (same GGUF,
  options and ``n_gpu_layers`` decision) and nothing else: no HTTP stack, no settings;
- llama-server from the same llama.cpp sources with the same slots x context, when it has been
  built (``bench.llama_batching --start-llama-server`` builds it), for scale.

Target: quantserve <= the engine's own + 150 MiB. One table, medians, from one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Only the standard library at module level: the engine-alone child imports this module, and
# whatever it imports would count against the engine.
log = logging.getLogger("bench")
MiB = 1 << 20
TARGET_MIB = 150
LLAMA_SERVER = Path("~/.cache/quantserve/llama-server-build/build/bin/llama-server").expanduser()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{proc.args!r} not ready in {timeout}s")


def served_rss(cmd: list[str], ready_url: str, log: Path) -> int:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(proc, ready_url)
            time.sleep(1.0)  # let start-up allocations settle
            return rss_bytes(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def quantserve_rss(workdir: Path) -> int:
    from bench.common import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "server", "serve", "--port", str(port), "--log-level", "warning"]
    return served_rss(cmd, f"http://127.0.0.1:{port}/ready", workdir / "quantserve.log")


def engine_rss(model: Path) -> int:
    """The engine alone, in a child process (this one has httpx and the bench loaded)."""
    cmd = [sys.executable, "-m", "bench.startup_rss", "--engine-child", str(model)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1])["rss"])


def default_layers(model: Path) -> int:
    """What ``n_gpu_layers: auto`` gives the default model here (0 on a CPU build)."""
    from backends import memplan
    from backends.llama_cpp.offload import query_devices, resolve
    from backends.llama_cpp.options import LlamaCppOptions

    o = LlamaCppOptions()
    layout = memplan.llama_layout(
        model,
        n_ctx=o.n_ctx,
        parallel=o.parallel,
        cache_type_k=o.cache_type_k,
        cache_type_v=o.cache_type_v,
    )
    return resolve(o.n_gpu_layers, query_devices(), layout, "bench").n_gpu_layers


def engine_child(model: Path) -> None:
    """Build the default model's engine exactly as the server would, then report this process's RSS."""
    from backends.llama_cpp.batched import BatchedEngine
    from backends.llama_cpp.options import LlamaCppOptions

    o = LlamaCppOptions()
    engine = BatchedEngine(
        model,
        n_ctx=o.n_ctx,
        parallel=o.parallel,
        n_batch=o.n_batch,
        n_threads=o.n_threads,
        n_gpu_layers=default_layers(model),
        flash_attn=o.flash_attn,
        cache_type_k=o.cache_type_k,
        cache_type_v=o.cache_type_v,
        max_queue=o.max_queue,
        prefix_cache=o.prefix_cache,
    )
    time.sleep(1.0)
    sys.stdout.write(json.dumps({"rss": rss_bytes(os.getpid())}) + "\n")
    engine.close()


def llama_server_rss(workdir: Path, model: Path) -> int:
    from backends.llama_cpp.options import LlamaCppOptions
    from bench.common import free_port

    o = LlamaCppOptions()
    port = free_port()
    threads = str(o.n_threads or len(os.sched_getaffinity(0)))
    cmd = [str(LLAMA_SERVER), "-m", str(model), "--port", str(port)]
    cmd += ["-c", str(o.n_ctx * o.parallel), "-np", str(o.parallel), "-b", str(o.n_batch), "-ub", str(o.n_batch)]
    cmd += ["-fa", "on" if o.flash_attn else "off", "-t", threads, "-ngl", str(default_layers(model))]
    return served_rss(cmd, f"http://127.0.0.1:{port}/health", workdir / "llama-server.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_child:
        engine_child(args.engine_child)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per /ready poll otherwise
    from server.runtime.model_store import ensure_default_model
    from server.settings import DEFAULT_MODELS_DIR

    model = ensure_default_model(DEFAULT_MODELS_DIR)
    samples: dict[str, list[int]] = {"quantserve serve": [], "engine alone": []}
    if LLAMA_SERVER.is_file():
        samples["llama-server"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):  # interleaved, so background load hits every column alike
            samples["quantserve serve"].append(quantserve_rss(Path(tmp)))
            samples["engine alone"].append(engine_rss(model))
            if "llama-server" in samples:
                samples["llama-server"].append(llama_server_rss(Path(tmp), model))
    med = {name: statistics.median(v) / MiB for name, v in samples.items()}
    engine = med["engine alone"]
    over = med["quantserve serve"] - engine
    lines = [
        f"start-up RSS, {model.name}, default options, median of {args.runs} runs",
        "| process | RSS MiB | vs engine alone |",
        "|---|---:|---:|",
        *[f"| {name} | {mib:.0f} | {mib - engine:+.0f} MiB ({mib / engine:.2f}x) |" for name, mib in med.items()],
        f"quantserve overhead {over:.0f} MiB: {'meets' if over <= TARGET_MIB else 'MISSES'} the target "
        f"(<= {TARGET_MIB} MiB over the engine alone)",
    ]
    log.info("%s", "\n".join(lines))


if __name__ == "__main__":
    main()
