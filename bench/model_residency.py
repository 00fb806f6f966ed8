"""Loading models on demand: the cost of a first request, and what a load does to other streams.

    .venv/bin/python -m bench.model_residency [--cycles 3] [--streams 2]

1. First request to an unloaded default model (``preload: false``): its latency against the
   model's load time + 1 s (target: within it), and a warm request for comparison.
2. A second model loaded beside a busy first one: two clients keep streaming from model ``a``
   while model ``b`` is loaded (``POST /v1/models/b/load``) and unloaded ``--cycles`` times. The
   inter-token latency p95 of ``a``'s streams during the loads is compared with its steady state
   (target: within 1.5x).

One run, one table of ratios (figures on a shared machine are noisy: say so beside them).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import QuantserveProcess
from server.runtime.model_store import ensure_default_model
from server.settings import DEFAULT_MODELS_DIR

log = logging.getLogger("bench")
PROMPT = "Once upon a time, in a small village by the sea, there lived"
CHAT = {"messages": [{"role": "user", "content": "Which city is the capital of France?"}], "max_tokens": 16}


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values, default=0.0)


def first_request(model: Path, workdir: Path) -> tuple[float, float, float]:
    """(first request s, load s, warm request s) on a server whose only model is not loaded."""
    server = QuantserveProcess(f"preload: false\nmodels:\n  - {{id: smol, path: {model}}}\n", workdir)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            assert client.get("/v1/models").json()["data"][0]["state"] == "available"
            started = time.perf_counter()
            client.post("/v1/chat/completions", json={"model": "smol", **CHAT}).raise_for_status()
            first = time.perf_counter() - started
            load = float(client.get("/v1/models/smol").json()["status"]["last_load_s"])
            started = time.perf_counter()
            client.post("/v1/chat/completions", json={"model": "smol", **CHAT}).raise_for_status()
            warm = time.perf_counter() - started
        return first, load, warm
    finally:
        server.close()


class Streamer(threading.Thread):
    """Streams completions from one model back to back, recording (arrival time, gap) per token."""

    def __init__(self, url: str, model: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.model, self.stop = url, model, stop
        self.gaps: list[tuple[float, float]] = []

    def run(self) -> None:
        body = {"model": self.model, "prompt": PROMPT, "max_tokens": 200, "temperature": 0.8, "stream": True}
        with httpx.Client(timeout=120) as client:
            while not self.stop.is_set():
                last = None
                with client.stream("POST", f"{self.url}/v1/completions", json=body) as resp:
                    for line in resp.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if not (chunk["choices"] and chunk["choices"][0]["text"]):
                            continue
                        now = time.perf_counter()
                        if last is not None:
                            self.gaps.append((now, now - last))
                        last = now
                        if self.stop.is_set():
                            break


def load_beside_busy(model: Path, workdir: Path, cycles: int, streams: int) -> tuple[float, float, float, int, int]:
    """(steady ITL p95, ITL p95 during loads, mean load s, samples steady, samples during)."""
    options = "{n_ctx: 1024, parallel: 4, n_threads: 1}"
    config = (
        "models:\n"
        f"  - {{id: a, path: {model}, options: {options}}}\n"
        f"  - {{id: b, path: {model}, preload: false, options: {options}}}\n"
    )
    server = QuantserveProcess(config, workdir)
    stop = threading.Event()
    workers = [Streamer(server.url, "a", stop) for _ in range(streams)]
    windows: list[tuple[float, float]] = []
    try:
        for w in workers:
            w.start()
        time.sleep(4)  # warm up: the streams settle
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for _ in range(cycles):
                time.sleep(3)
                started = time.perf_counter()
                client.post("/v1/models/b/load").raise_for_status()
                windows.append((started, time.perf_counter()))
                time.sleep(1)
                client.post("/v1/models/b/unload").raise_for_status()
            time.sleep(2)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=60)
        server.close()
    gaps = [g for w in workers for g in w.gaps]

    def during(at: float, gap: float) -> bool:  # the gap overlaps a load
        return any(at - gap < end and at > start for start, end in windows)

    def near(at: float) -> bool:  # within 2 s of a load or an unload
        return any(start - 2 < at < end + 3 for start, end in windows)

    steady = [gap for at, gap in gaps if not near(at)]
    loading = [gap for at, gap in gaps if during(at, gap)]
    mean_load = statistics.mean(end - start for start, end in windows) if windows else 0.0
    return p95(steady), p95(loading), mean_load, len(steady), len(loading)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--streams", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = ensure_default_model(DEFAULT_MODELS_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        first, load, warm = first_request(model, Path(tmp))
        steady, loading, mean_load, n_steady, n_loading = load_beside_busy(model, Path(tmp), args.cycles, args.streams)
    rows = [
        ("first request, model not loaded (s)", f"{first:.2f}", f"load {load:.2f} + 1 s", first / (load + 1), "<= 1"),
        ("the same request, model loaded (s)", f"{warm:.2f}", "", None, ""),
        (
            f"ITL p95 of 'a' while 'b' loads (ms, {n_loading} gaps)",
            f"{loading * 1000:.1f}",
            f"steady {steady * 1000:.1f} ms ({n_steady} gaps)",
            loading / steady if steady else None,
            "<= 1.5",
        ),
        ("mean load time of 'b' (s)", f"{mean_load:.2f}", "", None, ""),
    ]
    lines = [
        f"model {model.name}, {args.streams} streams on 'a', {args.cycles} loads of 'b'",
        "| measure | value | baseline | ratio | target |",
        "|---|---:|---|---:|---|",
        *[f"| {m} | {v} | {b} | {'' if r is None else f'{r:.2f}'} | {t} |" for m, v, b, r, t in rows],
    ]
    log.info("\n%s", "\n".join(lines))


if __name__ == "__main__":
    main()
