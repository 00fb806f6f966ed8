"""``quantserve inspect``, ``quantserve quantize`` and ``quantserve eval``: thin commands over
``toolkit`` (the logic lives there), with progress bars on the long steps."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from backends import memplan
from backends.errors import QuantserveError
from backends.formats import detect_format
from backends.types import ModelFormat
from toolkit.quantize_gguf import GGUF_TYPES

log = logging.getLogger("quantserve")

GGUF_CHOICES = "Q8_0, Q6_K, Q5_K_M, Q5_0, Q4_K_M, Q4_K_S, Q4_0, Q3_K_M, Q2_K; F16 (de-quantize); gptq, awq, w8a8"


@contextmanager
def _bars() -> Iterator[Progress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bars:
        yield bars


def _updater(bars: Progress) -> Callable[[str, int, int], None]:
    tasks: dict[str, TaskID] = {}

    def update(step: str, done: int, total: int) -> None:
        if step not in tasks:
            tasks[step] = bars.add_task(step, total=max(total, 1))
        bars.update(tasks[step], completed=done, total=max(total, 1))

    return update


def inspect(
    path: Annotated[Path, typer.Argument(help="A .gguf file or an HF checkpoint directory.")],
    n_ctx: Annotated[int, typer.Option(help="Context per sequence for the memory plan (0: trained).")] = 4096,
    parallel: Annotated[int, typer.Option(help="Sequences held at once (llama.cpp parallel / vLLM max_num_seqs).")] = 4,
    kv_type: Annotated[str, typer.Option(help="KV cache type: f16, q8_0, q4_0 (llama.cpp); auto, fp8 (vLLM).")] = "",
) -> None:
    """What a model holds (architecture, parameters, tensor types, bits/weight, context, chat
    template or quantization_config) and the memory it needs for a given context."""
    from toolkit.gguf_inspect import inspect_model

    path = path.expanduser()
    try:
        report = inspect_model(path)
        gguf = detect_format(path) is ModelFormat.GGUF
        kv = kv_type or ("f16" if gguf else "auto")
        if gguf:
            plan = memplan.plan_llama_cpp(path, n_ctx=n_ctx, parallel=parallel, cache_type_k=kv, cache_type_v=kv)
        else:
            plan = memplan.plan_vllm(path, max_model_len=n_ctx or None, max_num_seqs=parallel, kv_cache_dtype=kv)
    except QuantserveError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    echo = typer.echo
    echo(f"path:            {report.path}")
    echo(f"format:          {report.format}" + (f" ({report.file_type})" if report.file_type else ""))
    echo(f"architecture:    {report.architecture}")
    echo(f"parameters:      {report.parameters:,}")
    echo(f"size:            {report.file_bytes / 2**20:.1f} MiB, {report.bits_per_weight:.2f} bits per weight")
    echo(f"context length:  {report.context_length}")
    echo(f"chat template:   {'yes' if report.chat_template else 'no'}")
    echo(
        "tensor types:    "
        + ", ".join(f"{t} x{n} ({report.type_params[t]:,} params)" for t, n in report.type_mix.items())
    )
    if report.quantization_config is not None:
        q = report.quantization_config
        groups = q.get("config_groups", {})
        echo(f"quantization:    {q.get('quant_method')} {q.get('format', '')}".rstrip())
        for name, group in groups.items():
            w, a = group.get("weights") or {}, group.get("input_activations") or {}
            acts = f", activations {a.get('num_bits')}-bit {a.get('strategy')}" if a else ""
            echo(
                f"  {name}: weights {w.get('num_bits')}-bit per {w.get('strategy')} "
                f"(group size {w.get('group_size')}){acts}; ignore {q.get('ignore')}"
            )
    echo(f"memory plan:     {plan.describe()} -> {'fits' if plan.fits else 'DOES NOT FIT'}")


def quantize(
    src: Annotated[Path, typer.Argument(help="Source: an F16/BF16/Q8_0 GGUF, or an HF dir / GGUF for gptq/awq/w8a8.")],
    qtype: Annotated[str | None, typer.Option("--type", help=GGUF_CHOICES)] = None,
    size: Annotated[
        str | None, typer.Option(help="GGUF: the best per-tensor type mix that fits this file size (100MiB, 95MB).")
    ] = None,
    bpw: Annotated[float | None, typer.Option(help="GGUF: the best mix within these bits per weight.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output file / directory (default: beside the source).")] = None,
    imatrix: Annotated[Path | None, typer.Option(help="GGUF: importance matrix file (llama-imatrix output).")] = None,
    imatrix_text: Annotated[
        Path | None, typer.Option(help="GGUF: compute an importance matrix from this text first (llama-imatrix).")
    ] = None,
    text: Annotated[
        Path | None, typer.Option(help="--size/--bpw: calibration text (default: toolkit/data/calibration.txt).")
    ] = None,
    candidates: Annotated[
        str | None, typer.Option(help="--size/--bpw: comma-separated types to try (default: every one that applies).")
    ] = None,
    bands: Annotated[int, typer.Option(help="--size/--bpw: layer bands per tensor role.")] = 5,
    calib_n_ctx: Annotated[int, typer.Option(help="--size/--bpw: calibration window (tokens).")] = 256,
    calib_windows: Annotated[int, typer.Option(help="--size/--bpw: calibration windows (at most).")] = 4,
    eval_windows: Annotated[
        int, typer.Option(help="--size/--bpw: 512-token held-out windows to measure the result on (0: skip).")
    ] = 16,
    group_size: Annotated[int, typer.Option(help="gptq/awq: weights per scale group.")] = 64,
    calibration: Annotated[Path | None, typer.Option(help="gptq/awq/w8a8: calibration text file.")] = None,
    num_samples: Annotated[int, typer.Option(help="gptq/awq/w8a8: calibration samples.")] = 64,
    threads: Annotated[
        int | None,
        typer.Option(help="GGUF quantization threads; --size/--bpw: also parallel evaluations (default: all cores)."),
    ] = None,
) -> None:
    """Quantize a model: GGUF levels through llama.cpp, GPTQ/AWQ/W8A8 through llm-compressor."""
    from toolkit import quantize_hf
    from toolkit.dequant import dequantize_gguf
    from toolkit.quantize_gguf import GGUF_TYPES, QuantizeError, quantize_gguf, quantized_path

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    src = src.expanduser()
    kind = (qtype or "").strip()
    try:
        if (size is not None or bpw is not None) == bool(kind):
            raise QuantizeError("give --type, or a budget (--size or --bpw)")
        if not kind:
            search = MixSearch(text, candidates, bands, calib_n_ctx, calib_windows, eval_windows, threads)
            dst = _quantize_to_budget(src, size, bpw, out, imatrix, imatrix_text, search)
        elif kind.upper() == "F16":
            dst = out or quantized_path(src, "F16")
            with _bars() as bars:
                task = bars.add_task(f"de-quantize {src.name} -> F16", total=None)
                dequantize_gguf(src, dst, progress=lambda d, t: bars.update(task, completed=d, total=t))
        elif kind.upper() in GGUF_TYPES:
            matrix = imatrix
            if imatrix_text is not None:
                from toolkit.llama_tools import compute_imatrix

                matrix = compute_imatrix(src, imatrix_text.expanduser(), src.with_suffix(".imatrix.gguf"))
            dst = out or quantized_path(src, kind.upper(), imatrix=matrix is not None)
            with _bars() as bars:
                bars.add_task(f"quantize {src.name} -> {kind.upper()}", total=None)
                quantize_gguf(src, dst, kind, imatrix=matrix, threads=threads)
        elif kind.lower() in quantize_hf.HF_METHODS:
            from toolkit.hf_prepare import CALIBRATION_TEXT, PrepareError

            method = kind.lower()
            with _bars() as bars:
                bars.add_task(f"llm-compressor {method} (minutes on a CPU)", total=None)
                try:
                    dst = quantize_hf.quantize_hf(
                        src,
                        method,  # type: ignore[arg-type]
                        out_dir=out,
                        group_size=group_size,
                        calibration=calibration or CALIBRATION_TEXT,
                        num_samples=num_samples,
                    )
                except PrepareError as exc:
                    raise QuantizeError(str(exc)) from exc
        else:
            raise QuantizeError(f"unknown --type {qtype!r}; choose one of: {GGUF_CHOICES}")
    except QuantizeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(dst))


@dataclass(frozen=True, slots=True)
class MixSearch:
    """The ``--size`` / ``--bpw`` search's own options."""

    text: Path | None
    candidates: str | None
    bands: int
    n_ctx: int
    windows: int
    eval_windows: int
    threads: int | None


def _quantize_to_budget(
    src: Path,
    size: str | None,
    bpw: float | None,
    out: Path | None,
    imatrix: Path | None,
    imatrix_text: Path | None,
    opts: MixSearch,
) -> Path:
    """The searched mix (toolkit/size_quant.py), then its quality on held-out text vs F16."""
    from server.settings import load_settings
    from toolkit import report, size_quant
    from toolkit.dequant import dequantize_gguf, f16_source
    from toolkit.gguf_inspect import inspect_model
    from toolkit.gguf_splice import read_layout
    from toolkit.hf_prepare import CALIBRATION_TEXT
    from toolkit.ladder import LadderConfig, LadderResult, evaluate_variants
    from toolkit.mix_types import parse_size
    from toolkit.quantize_gguf import quantized_path
    from toolkit.sensitivity import Calibration

    models_dir = load_settings().models_dir
    threads = opts.threads or os.cpu_count() or 1
    budget = size_quant.Budget(file_bytes=None if size is None else parse_size(size), bits_per_weight=bpw)
    label = size.replace(" ", "") if size is not None else f"{bpw}bpw"
    with _bars() as bars:
        progress = _updater(bars)
        f16 = src
        if inspect_model(src).file_type not in ("F16", "BF16", "F32"):
            f16 = f16_source(models_dir, src)
            if not f16.is_file():
                dequantize_gguf(src, f16, progress=lambda d, t: progress("de-quantize to F16", d, t))
        matrix = imatrix.expanduser() if imatrix is not None else None
        if imatrix_text is not None:
            matrix = f16.with_suffix(".imatrix.gguf")
        cfg = size_quant.SearchConfig(
            source=f16,
            dst=out or quantized_path(f16, f"mix-{label}", imatrix=matrix is not None),
            budget=budget,
            work_dir=models_dir / "sizequant",
            calibration=Calibration((opts.text or CALIBRATION_TEXT).read_text(), opts.n_ctx, opts.windows, threads),
            imatrix=matrix,
            types=opts.candidates.split(",") if opts.candidates else None,
            bands=opts.bands,
        )
        size_quant.plan_groups(cfg, read_layout(f16))  # an impossible budget fails now, not after the imatrix
        if imatrix_text is not None and matrix is not None:
            from toolkit.llama_tools import compute_imatrix

            progress("llama-imatrix", 0, 1)
            compute_imatrix(f16, imatrix_text.expanduser(), matrix, threads=threads)
            progress("llama-imatrix", 1, 1)
        result = size_quant.search(cfg, progress)
        table = ""
        if opts.eval_windows:
            lcfg = LadderConfig(
                f16, models_dir / "sizequant", n_ctx=512, max_windows=opts.eval_windows, threads=threads, speed=False
            )
            rows = evaluate_variants([("F16", f16), (result.path.name, result.path)], lcfg, LadderResult(), progress)
            table = report.markdown(rows.rows, rows.reference)
    echo = typer.echo
    echo("\n".join(size_quant.mix_lines(result)))
    echo(
        f"{result.path.name}: {result.file_bytes / 2**20:.2f} MiB ({result.file_bytes:,} bytes; budget "
        f"{budget.describe()}), {result.bits_per_weight:.3f} bits/weight; types "
        + ", ".join(f"{t} x{n}" for t, n in result.type_counts().items())
    )
    echo(
        f"KL on the calibration windows: predicted {result.predicted_kl:.4f} (the groups' sum), measured "
        f"{result.calibration_kl:.4f}; {result.evaluations} evaluations run now; search {result.seconds:.0f} s"
    )
    if table:
        echo(table)
    return result.path


def evaluate(
    models: Annotated[
        list[Path] | None, typer.Argument(help="Models to score; the first (a GGUF) is the reference.")
    ] = None,
    ladder: Annotated[bool, typer.Option("--ladder", help="Build and score every GGUF level from --source.")] = False,
    source: Annotated[Path | None, typer.Option(help="Ladder source GGUF (default: the default model).")] = None,
    hf: Annotated[
        list[Path] | None, typer.Option(help="Ladder: also score these HF / compressed-tensors dirs.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where the table (.md), results (.json) and chart (.png) go.")] = Path(
        "eval-results"
    ),
    types: Annotated[str, typer.Option(help="Ladder: comma-separated GGUF levels.")] = ",".join(GGUF_TYPES),
    n_ctx: Annotated[int, typer.Option(help="Perplexity window (tokens).")] = 512,
    windows: Annotated[int, typer.Option(help="Windows of held-out text to score (0: all of it).")] = 16,
    speed: Annotated[bool, typer.Option(help="Also measure prefill/decode speed and peak memory.")] = True,
    kv_n_ctx: Annotated[int, typer.Option(help="Ladder: context for the KV-cache-type comparison (0: skip).")] = 4096,
    mix_at: Annotated[
        str, typer.Option(help="Ladder: levels whose file size a searched per-tensor mix also gets (Q4_K_M,Q3_K_M).")
    ] = "",
    threads: Annotated[int, typer.Option(help="Threads for every engine.")] = 2,
) -> None:
    """Perplexity, KL divergence and top-1 agreement vs the reference, speed, size and memory:
    of the given models, or (--ladder) of every quantization level of one model."""
    from server.runtime.model_store import ensure_default_model
    from server.settings import load_settings
    from toolkit import report
    from toolkit.ladder import LadderConfig, LadderResult, evaluate_variants, run_ladder

    logging.basicConfig(level="WARNING")
    out = out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    models_dir = load_settings().models_dir
    src = (source or ensure_default_model(models_dir)).expanduser()
    cfg = LadderConfig(
        source=src,
        work_dir=models_dir / "ladder",
        hf_dirs=tuple(p.expanduser() for p in hf or ()),
        gguf_types=tuple(t.strip().upper() for t in types.split(",") if t.strip()),
        extra_ggufs=(src,) if ladder and source is None else (),
        n_ctx=n_ctx,
        max_windows=windows or None,
        threads=threads,
        speed=speed,
        kv_types=("f16", "q8_0", "q4_0") if kv_n_ctx else (),
        kv_n_ctx=kv_n_ctx,
        mix_at=tuple(t.strip().upper() for t in mix_at.split(",") if t.strip()),
        mix_cache=models_dir / "sizequant",  # shared with `quantize --size`: scores keyed by content
    )
    with _bars() as bars:
        progress = _updater(bars)
        if ladder:
            result = run_ladder(cfg, progress)
        elif models:
            paths = [p.expanduser() for p in models]
            result = evaluate_variants([(p.name, p) for p in paths], cfg, LadderResult(), progress)
        else:
            typer.echo("error: give models to score, or --ladder", err=True)
            raise typer.Exit(2)
    table = report.markdown(result.rows, result.reference)
    if result.kv_rows:
        table += "\n" + report.kv_markdown(result.kv_rows, src.name, cfg.kv_n_ctx, cfg.kv_parallel)
    (out / "results.md").write_text(table)
    report.save_json(
        out / "results.json",
        result.rows,
        result.kv_rows,
        {"steps": result.steps, "seconds": result.seconds, "n_ctx": n_ctx, "windows": windows},
    )
    report.chart(out / "results.png", result.rows, f"{src.name}: {n_ctx}-token windows")
    typer.echo(table)
    typer.echo(
        f"total {result.seconds:.0f} s; wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'results.png'}"
    )


def register(app: typer.Typer) -> None:
    app.command()(inspect)
    app.command()(quantize)
    app.command("eval")(evaluate)
