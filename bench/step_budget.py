"""What one decode step costs, and what is left of it for a server to win or lose.

    .venv/bin/python -m bench.step_budget [--clients 1,8] [--context 160] [--steps 60]

Measured on the default GGUF with the engine's own ``NativeModel`` (the same llama.cpp build and
context settings as ``quantserve serve``), with C sequences each holding ``--context`` tokens in
the KV cache, one thread doing everything (as the engine thread does):

- ``llama_decode`` of a step of C decode tokens: the work quantserve and llama-server share;
- llama.cpp's sampler chain with llama-server's defaults (top_k 40, top_p 0.95, min_p 0.05,
  temperature 0.8), one ``llama_sampler_sample`` per sequence: what llama-server adds per step;
- quantserve's batched sampler over the same logits: greedy, and OpenAI's default full
  distribution.

The last column is the most a server can gain from sampling alone: (decode + llama-server's
chain) / decode, the tokens/s ratio quantserve would reach over llama-server if its own sampling,
HTTP and every other cost were zero. Medians of ``--steps`` repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from backends.llama_cpp import sampling as smp
from backends.llama_cpp.batch_sampling import BatchSampler, Draw
from backends.llama_cpp.native import ContextConfig, NativeModel
from backends.types import SamplingParams
from bench.common import default_model_path

LLAMA_SERVER_DEFAULTS = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def fill(native: NativeModel, seqs: int, context: int) -> None:
    """``context`` tokens of KV cache in each of ``seqs`` sequences, prefilled a sequence at a time."""
    for seq in range(seqs):
        for start in range(0, context, native.n_batch):
            n = min(native.n_batch, context - start)
            for i in range(n):
                native.put(i, 100 + (start + i + 7 * seq) % 1000, start + i, seq, i == n - 1)
            if native.decode(n) != 0:
                raise RuntimeError("prefill failed")


def measure(native: NativeModel, seqs: int, context: int, steps: int) -> dict[str, float]:
    fill(native, seqs, context)
    position = context

    def step() -> None:
        nonlocal position
        for seq in range(seqs):
            native.put(seq, 500 + seq, position, seq, True)
        if native.decode(seqs) != 0:
            raise RuntimeError("decode failed")
        position += 1

    decode = median_ms(step, steps)
    chains = [
        smp.build_chain(LLAMA_SERVER_DEFAULTS, vocab=native.vocab, n_vocab=native.n_vocab, seed=seq)
        for seq in range(seqs)
    ]
    try:
        chain = median_ms(lambda: [smp.sample(c, native.ctx, seq) for seq, c in enumerate(chains)], steps)
    finally:
        for c in chains:
            smp.free_chain(c)
    sampler = BatchSampler(seqs, native.n_vocab)
    rows = list(range(seqs))
    out = {"decode": decode, "llama.cpp chain": chain}
    for name, params in (("greedy", SamplingParams(temperature=0.0)), ("full distribution", SamplingParams())):
        draws = [Draw.of(params, seq) for seq in rows]

        def draw(draws: list[Draw] = draws) -> list[int]:
            return sampler.sample(native.output_logits(seqs), rows, draws)

        out[name] = median_ms(draw, steps)
    for seq in range(seqs):
        native.seq_rm(seq, -1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--clients", default="1,8", help="sequences per step")
    parser.add_argument("--context", type=int, default=160, help="tokens in each sequence's KV cache")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=1024, help="context per sequence")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    cfg = ContextConfig(args.n_ctx, max(levels), 512, args.threads, 0, True, "f16", "f16")
    native = NativeModel(args.model, cfg)
    try:
        native.warmup()
        rows = {c: measure(native, c, args.context, args.steps) for c in levels}
    finally:
        native.close()
    head = "| sequences | llama_decode | llama.cpp chain (llama-server defaults) | quantserve greedy | "
    head += "quantserve full distribution | (decode + chain) / decode |"
    lines = [head, "|---:|---:|---:|---:|---:|---:|"]
    for c, r in rows.items():
        bound = (r["decode"] + r["llama.cpp chain"]) / r["decode"]
        cells = [r[k] for k in ("decode", "llama.cpp chain", "greedy", "full distribution")]
        lines.append(f"| {c} | " + " | ".join(f"{v:.2f} ms" for v in cells) + f" | {bound:.3f}x |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
