"""Searched per-tensor mixes vs llama.cpp's recipes at equal file size, on held-out text.

    .venv/bin/python -m bench.size_quant [--recipes Q4_K_M,Q3_K_M] [--windows 16] [--threads 1]
                                         [--cold] [--out bench/results/size-quant]

For each recipe: the recipe, the mix searched within its file size (every candidate type), and
the mix searched without Q4_1. The default model's F16 is de-quantized Q4_1, so re-quantizing to
Q4_1 is nearly lossless there; the second mix shows what the search finds without that shortcut.
All rows are scored by the ladder's evaluator against F16 on the held-out text (never the
calibration text the search measured on). ``--cold`` measures the search from an empty score
cache (otherwise cached scores are reused and the search time is only the DP and the writes).
Writes ``results.md``, ``results.json`` and ``results.png`` under ``--out``."""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

from server.runtime.model_store import ensure_default_model
from server.settings import DEFAULT_MODELS_DIR
from toolkit import report
from toolkit.hf_prepare import CALIBRATION_TEXT
from toolkit.ladder import LadderConfig, LadderResult, add_mixes, build_ggufs, evaluate_variants
from toolkit.mix_types import candidate_types
from toolkit.quantize_gguf import quantized_path
from toolkit.sensitivity import Calibration
from toolkit.size_quant import Budget, SearchConfig, search

log = logging.getLogger("bench")


def _quiet(_step: str, _done: int, _total: int) -> None:
    return None  # the log says what runs


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the search's worker processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default="Q4_K_M,Q3_K_M")
    parser.add_argument("--windows", type=int, default=16, help="held-out windows of 512 tokens")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads for the held-out scoring")
    parser.add_argument("--workers", type=int, default=2, help="the search's single-thread evaluation processes")
    parser.add_argument("--cold", action="store_true", help="search from an empty score cache")
    parser.add_argument("--out", type=Path, default=Path("bench/results/size-quant"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    recipes = tuple(r.strip().upper() for r in args.recipes.split(","))
    cold = tempfile.TemporaryDirectory(prefix="size-quant-") if args.cold else None
    cfg = LadderConfig(
        source=ensure_default_model(DEFAULT_MODELS_DIR),
        work_dir=DEFAULT_MODELS_DIR / "ladder",
        gguf_types=recipes,
        n_ctx=512,
        max_windows=args.windows,
        threads=args.threads,
        speed=False,
        kv_types=(),
        mix_at=recipes,
        mix_workers=args.workers,
        mix_cache=Path(cold.name) if cold else DEFAULT_MODELS_DIR / "sizequant",
    )
    result = LadderResult()
    ggufs = build_ggufs(cfg, result, _quiet)
    started, cpu = time.monotonic(), _cpu_seconds()
    variants = add_mixes(ggufs, cfg, result, _quiet)
    search_wall, search_cpu = time.monotonic() - started, _cpu_seconds() - cpu
    f16 = dict(ggufs)["F16"]
    no_q41 = tuple(t for t in candidate_types(None, imatrix=False) if t != "Q4_1")
    for recipe in recipes:
        mix = search(
            SearchConfig(
                source=f16,
                dst=quantized_path(f16, f"mix-{recipe}-noQ4_1", cfg.work_dir),
                budget=Budget(file_bytes=dict(ggufs)[recipe].stat().st_size),
                work_dir=cfg.mix_cache or cfg.work_dir / "sizequant",
                calibration=Calibration(CALIBRATION_TEXT.read_text(), workers=args.workers),
                types=no_q41,
            )
        )
        at = next(i for i, (name, _) in enumerate(variants) if name == f"mix@{recipe}")
        variants.insert(at + 1, (f"mix@{recipe} no Q4_1", mix.path))
    evaluate_variants(variants, cfg, result, _quiet)
    if cold is not None:
        cold.cleanup()
    args.out.mkdir(parents=True, exist_ok=True)
    table = report.markdown(result.rows, result.reference)
    meta = {
        "search_wall_s": search_wall,
        "search_cpu_s": search_cpu,
        "cold": args.cold,
        "windows": args.windows,
        "steps": result.steps,
        "load_average_1m_at_end": Path("/proc/loadavg").read_text().split()[0],
    }
    (args.out / "results.md").write_text(table)
    report.save_json(args.out / "results.json", result.rows, [], meta)
    report.chart(args.out / "results.png", result.rows, "SmolLM2-135M-Instruct: searched mixes vs recipes")
    log.info("search: %.0f s wall, %.0f s CPU", search_wall, search_cpu)
    sys.stdout.write(table + json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
