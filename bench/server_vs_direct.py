"""Single-stream decode speed: quantserve over HTTP vs llama-cpp-python called in-process.

    .venv/bin/python -m bench.server_vs_direct [--runs 5] [--tokens 128] [--threads 2]

Both sides load the same GGUF with the same context, batch and thread settings and decode
the same greedy completion. Runs alternate (direct, server, direct, ...) so background load
hits both alike; the table shows medians and the server/direct ratio (target >= 0.95).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import QuantserveProcess, StreamTiming, median, stream_completion
from server.runtime.model_store import ensure_default_model
from server.settings import DEFAULT_MODELS_DIR

log = logging.getLogger("bench")
PROMPT = "Once upon a time, in a small village by the sea, there lived"


def direct_run(llm: object, tokens: int) -> StreamTiming:
    start = time.perf_counter()
    first = last = 0.0
    count = 0
    for chunk in llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.0, stream=True):  # type: ignore[attr-defined]
        if not chunk["choices"][0]["text"]:
            continue  # the closing chunk carries only finish_reason
        count += 1  # one chunk per generated token here (ASCII prose, no stop strings)
        now = time.perf_counter()
        first = first or now
        last = now
    return StreamTiming(first - start, last - first, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from llama_cpp import Llama

    model = ensure_default_model(DEFAULT_MODELS_DIR)
    opts = {"n_ctx": args.n_ctx, "n_threads": args.threads, "n_batch": 512, "flash_attn": True}
    llm = Llama(
        str(model),
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_batch=512,
        n_ubatch=512,
        flash_attn=True,  # quantserve's default, so both sides run the same kernels
        verbose=False,
    )
    config = f"models:\n  - id: bench\n    path: {model}\n    backend: llama_cpp\n    options: {opts}\n"
    body = {"model": "bench", "prompt": PROMPT, "max_tokens": args.tokens, "temperature": 0}
    direct: list[StreamTiming] = []
    served: list[StreamTiming] = []
    with tempfile.TemporaryDirectory() as tmp, httpx.Client() as client:
        server = QuantserveProcess(config, Path(tmp))
        try:
            direct_run(llm, 8)  # warm-up both sides
            stream_completion(client, server.url, {**body, "max_tokens": 8})
            for i in range(args.runs):
                direct.append(direct_run(llm, args.tokens))
                served.append(stream_completion(client, server.url, body))
                log.info(
                    "run %d: direct %.1f tok/s, server %.1f tok/s", i + 1, direct[-1].decode_tps, served[-1].decode_tps
                )
        finally:
            server.close()
    d_tps = median([t.decode_tps for t in direct])
    s_tps = median([t.decode_tps for t in served])
    d_ttft = median([t.ttft for t in direct]) * 1000
    s_ttft = median([t.ttft for t in served]) * 1000
    rows = [
        ("llama-cpp-python in-process", d_tps, d_ttft, direct[0].tokens, 1.0),
        ("quantserve over HTTP (SSE)", s_tps, s_ttft, served[0].tokens, s_tps / d_tps if d_tps else 0.0),
    ]
    lines = [
        f"model {model.name}, {args.threads} threads, {args.tokens} tokens max, median of {args.runs} runs",
        "| system | decode tok/s | TTFT ms | tokens | ratio to direct |",
        "|---|---:|---:|---:|---:|",
        *[f"| {name} | {tps:.1f} | {ttft:.0f} | {n} | {ratio:.3f} |" for name, tps, ttft, n, ratio in rows],
    ]
    log.info("\n%s", "\n".join(lines))


if __name__ == "__main__":
    main()
