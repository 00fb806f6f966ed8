"""The quantization ladder of one model: every GGUF level from an F16 source, plus compressed-tensors
checkpoints, each scored against the F16 reference on the same tokens, timed on the engine that
serves it; and the KV-cache type's effect at a long context."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backends import memplan
from toolkit.dequant import dequantize_gguf, f16_source
from toolkit.gguf_inspect import inspect_model
from toolkit.perplexity import GgufScorer, ReferenceStore, Windows, evaluate, heldout_text
from toolkit.quantize_gguf import GGUF_TYPES, quantize_gguf, quantized_path
from toolkit.report import KvRow, Row
from toolkit.speed import measure

logger = logging.getLogger(__name__)

# (step description, done, total) for a progress bar.
Progress = Callable[[str, int, int], None]


def _quiet(_what: str, _done: int, _total: int) -> None:
    return None


def _sub(progress: Progress, step: str) -> Callable[[int, int], None]:
    return lambda done, total: progress(step, done, total)


@dataclass(frozen=True, slots=True)
class LadderConfig:
    source: Path  # the GGUF the ladder starts from (de-quantized to F16 unless already F16)
    work_dir: Path  # quantized files and the reference log-probabilities
    gguf_types: Sequence[str] = GGUF_TYPES
    extra_ggufs: Sequence[Path] = ()  # measured as they are (e.g. the shipped Q4_1)
    hf_dirs: Sequence[Path] = ()  # bf16 / compressed-tensors checkpoints
    n_ctx: int = 512
    max_windows: int | None = 16
    threads: int = 2
    speed: bool = True
    kv_types: Sequence[str] = ("f16", "q8_0", "q4_0")
    kv_model: Path | None = None  # default: the source GGUF
    kv_n_ctx: int = 4096
    kv_windows: int = 2
    kv_parallel: int = 4
    # recipes (of gguf_types) whose file size a searched per-tensor mix gets as its budget
    mix_at: Sequence[str] = ()
    mix_imatrix: Path | None = None
    mix_workers: int = 2  # the search's parallel single-thread evaluations (toolkit.sensitivity)
    mix_cache: Path | None = None  # the search's score cache (default work_dir/sizequant)


@dataclass
class LadderResult:
    rows: list[Row] = field(default_factory=list)
    kv_rows: list[KvRow] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds
    seconds: float = 0.0
    reference: str = "F16"


def build_ggufs(cfg: LadderConfig, result: LadderResult, progress: Progress) -> list[tuple[str, Path]]:
    """F16 source (cached) + every requested level quantized from it (cached)."""
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    f16 = cfg.source
    if inspect_model(cfg.source).file_type not in ("F16", "BF16", "F32"):
        f16 = f16_source(cfg.work_dir, cfg.source)
        if not f16.is_file():
            started = time.monotonic()
            dequantize_gguf(cfg.source, f16, progress=lambda d, t: progress("de-quantize to F16", d, t))
            result.steps["dequantize F16"] = time.monotonic() - started
    out = [("F16", f16)]
    for i, qtype in enumerate(cfg.gguf_types):
        progress(f"quantize {qtype}", i, len(cfg.gguf_types))
        dst = quantized_path(f16, qtype, cfg.work_dir)
        if not dst.is_file():
            started = time.monotonic()
            quantize_gguf(f16, dst, qtype, threads=cfg.threads)
            result.steps[f"quantize {qtype}"] = time.monotonic() - started
        out.append((qtype, dst))
    progress("quantize", len(cfg.gguf_types), len(cfg.gguf_types))
    out += [(p.name.removesuffix(".gguf").rsplit(".", 1)[-1] + " (shipped)", p) for p in cfg.extra_ggufs]
    return out


def run_ladder(cfg: LadderConfig, progress: Progress = _quiet) -> LadderResult:
    """The whole ladder: build the GGUF levels, score every variant, then the KV-cache effect."""
    started = time.monotonic()
    result = LadderResult()
    ggufs = build_ggufs(cfg, result, progress)
    variants: list[tuple[str, Path]] = add_mixes(ggufs, cfg, result, progress) if cfg.mix_at else list(ggufs)
    base = cfg.source.name.split(".")[0] + "-"
    variants += [(p.name.removeprefix(base), p) for p in cfg.hf_dirs]
    evaluate_variants(variants, cfg, result, progress)
    if cfg.kv_types:
        result.kv_rows = kv_effect(cfg, result, progress)
    result.seconds = time.monotonic() - started
    return result


def add_mixes(
    ggufs: Sequence[tuple[str, Path]], cfg: LadderConfig, result: LadderResult, progress: Progress
) -> list[tuple[str, Path]]:
    """``ggufs`` with, after each recipe named in ``mix_at``, the searched mix that fits its file
    size (``mix@Q4_K_M``); the sensitivities are measured once and shared by every budget."""
    from toolkit.hf_prepare import CALIBRATION_TEXT
    from toolkit.sensitivity import Calibration
    from toolkit.size_quant import Budget, SearchConfig, search

    paths = dict(ggufs)
    missing = [r for r in cfg.mix_at if r not in paths]
    if missing:
        raise ValueError(f"mix_at names {', '.join(missing)}, which the ladder does not build")
    f16 = paths["F16"]
    out: list[tuple[str, Path]] = []
    for name, path in ggufs:
        out.append((name, path))
        if name not in cfg.mix_at:
            continue
        t0 = time.monotonic()
        mix = search(
            SearchConfig(
                source=f16,
                dst=quantized_path(f16, f"mix-{name}", cfg.work_dir, imatrix=cfg.mix_imatrix is not None),
                budget=Budget(file_bytes=path.stat().st_size),
                work_dir=cfg.mix_cache or cfg.work_dir / "sizequant",
                calibration=Calibration(CALIBRATION_TEXT.read_text(), workers=cfg.mix_workers),
                imatrix=cfg.mix_imatrix,
            ),
            progress,
        )
        result.steps[f"search mix@{name}"] = time.monotonic() - t0
        out.append((f"mix@{name}", mix.path))
    return out


def evaluate_variants(
    variants: Sequence[tuple[str, Path]], cfg: LadderConfig, result: LadderResult, progress: Progress = _quiet
) -> LadderResult:
    """Score each (name, path); the first must be a GGUF and is the reference (its tokens too)."""
    from toolkit.hf_eval import HfScorer

    ref_path = cfg.work_dir / f"reference-{cfg.n_ctx}.npy"
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    windows: Windows | None = None
    store: ReferenceStore | None = None
    result.reference = variants[0][0]
    for i, (name, path) in enumerate(variants):
        step = f"evaluate {name}"
        t0 = time.monotonic()
        engine = "llama.cpp" if path.is_file() else "transformers"
        scorer = GgufScorer(path, cfg.n_ctx, threads=cfg.threads) if engine == "llama.cpp" else None
        if windows is None:
            if scorer is None:
                raise ValueError(f"the reference {path.name} must be a GGUF file (its tokenization is shared)")
            windows = scorer.windows(heldout_text(), cfg.n_ctx).limit(cfg.max_windows)
            store = ReferenceStore(ref_path, windows, scorer.n_vocab, create=True)
        logits_fn = scorer if scorer is not None else HfScorer(path, threads=cfg.threads)
        first = i == 0
        quality = evaluate(
            logits_fn,
            windows,
            reference=None if first else store,
            record=store if first else None,
            progress=_sub(progress, step),
        )
        logits_fn.close()
        result.steps[step] = time.monotonic() - t0
        speed = None
        if cfg.speed:
            t0 = time.monotonic()
            progress(f"speed {name}", 0, 1)
            speed = measure(path, threads=cfg.threads)
            result.steps[f"speed {name}"] = time.monotonic() - t0
        report = inspect_model(path)
        result.rows.append(Row(name, engine, report.file_bytes, report.bits_per_weight, quality, speed))
        logger.info("%s: PPL %.3f (%s)", name, quality.perplexity, engine)
    ref_path.unlink(missing_ok=True)
    return result


def kv_effect(cfg: LadderConfig, result: LadderResult, progress: Progress) -> list[KvRow]:
    """One model at ``kv_n_ctx`` with each KV cache type; KL against the f16 cache."""
    model = cfg.kv_model or cfg.source
    ref_path = cfg.work_dir / f"reference-kv-{cfg.kv_n_ctx}.npy"
    rows: list[KvRow] = []
    store: ReferenceStore | None = None
    for kv in cfg.kv_types:
        step = f"KV {kv} at {cfg.kv_n_ctx}"
        t0 = time.monotonic()
        scorer = GgufScorer(model, cfg.kv_n_ctx, threads=cfg.threads, cache_type_k=kv, cache_type_v=kv)
        windows = scorer.windows(heldout_text(), cfg.kv_n_ctx).limit(cfg.kv_windows)
        first = store is None
        if store is None:
            store = ReferenceStore(ref_path, windows, scorer.n_vocab, create=True)
        quality = evaluate(
            scorer,
            windows,
            reference=None if first else store,
            record=store if first else None,
            progress=_sub(progress, step),
        )
        scorer.close()
        plan = memplan.plan_llama_cpp(
            model, n_ctx=cfg.kv_n_ctx, parallel=cfg.kv_parallel, cache_type_k=kv, cache_type_v=kv
        )
        rows.append(KvRow(kv, plan.kv_bytes, quality))
        result.steps[step] = time.monotonic() - t0
    ref_path.unlink(missing_ok=True)
    return rows
