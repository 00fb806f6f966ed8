"""Our perplexity vs llama.cpp's own ``llama-perplexity`` on the same GGUF, text and context.

    .venv/bin/python -m bench.perplexity_vs_llama [--model GGUF] [--n-ctx 512] [--chunks 16]

``llama-perplexity`` is built once from the llama.cpp sources inside the llama-cpp-python 0.3.36
sdist, in the cached build tree the other benchmarks use (~/.cache/quantserve/llama-server-build;
never in the repository). Both sides score the shipped held-out text (toolkit/data/heldout.txt)
in windows of ``--n-ctx`` tokens, the second half of each window; target ratio 1.00 +- 0.01.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from server.runtime.model_store import ensure_default_model
from server.settings import DEFAULT_MODELS_DIR
from toolkit.llama_tools import build_tool
from toolkit.perplexity import GgufScorer, evaluate, heldout_text

log = logging.getLogger("bench")
FINAL = re.compile(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)")


def llama_perplexity(model: Path, text: Path, n_ctx: int, chunks: int, threads: int) -> tuple[float, float, float]:
    """(PPL, its error, seconds) from llama.cpp's tool."""
    tool = build_tool("llama-perplexity")
    cmd = [str(tool), "-m", str(model), "-f", str(text), "-c", str(n_ctx), "--chunks", str(chunks)]
    cmd += ["-t", str(threads), "-fa", "on"]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    match = FINAL.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or match is None:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        raise SystemExit(f"llama-perplexity failed (exit {proc.returncode}):\n{tail}")
    return float(match.group(1)), float(match.group(2)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: the default model)")
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    model = (args.model or ensure_default_model(DEFAULT_MODELS_DIR)).expanduser()

    with resources.as_file(resources.files("toolkit").joinpath("data/heldout.txt")) as text:
        theirs, theirs_err, theirs_s = llama_perplexity(model, text, args.n_ctx, args.chunks, args.threads)
    started = time.monotonic()
    scorer = GgufScorer(model, args.n_ctx, threads=args.threads)
    ours = evaluate(scorer, scorer.windows(heldout_text(), args.n_ctx).limit(args.chunks))
    scorer.close()
    ours_s = time.monotonic() - started

    out = sys.stdout
    out.write(f"model {model.name}, held-out text toolkit/data/heldout.txt, n_ctx {args.n_ctx}, ")
    out.write(f"{args.chunks} windows ({ours.scored_tokens} scored tokens), {args.threads} threads\n")
    out.write("| system | PPL | ± | seconds | ratio to llama-perplexity |\n|---|---:|---:|---:|---:|\n")
    out.write(f"| llama.cpp llama-perplexity | {theirs:.4f} | {theirs_err:.4f} | {theirs_s:.1f} | 1.0000 |\n")
    out.write(
        f"| quantserve toolkit | {ours.perplexity:.4f} | {ours.perplexity_stderr:.4f} | {ours_s:.1f} "
        f"| {ours.perplexity / theirs:.4f} |\n"
    )
    if abs(ours.perplexity / theirs - 1) > 0.01:
        raise SystemExit("ratio outside 1.00 +- 0.01")


if __name__ == "__main__":
    main()
