"""GPTQ / AWQ (W4A16) and INT8 W8A8 compressed-tensors checkpoints through llm-compressor, in
its own venv, with the machinery the vLLM fixtures use (``toolkit.hf_prepare``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from toolkit.hf_prepare import CALIBRATION_TEXT, gguf_to_hf_bf16, quantize

HfMethod = Literal["gptq", "awq", "w8a8"]
HF_METHODS: tuple[HfMethod, ...] = ("gptq", "awq", "w8a8")


def hf_output_dir(src: Path, method: HfMethod, group_size: int) -> Path:
    """``NAME-bf16`` -> ``NAME-W4A16-awq-g64`` / ``NAME-W8A8-gptq`` beside it."""
    base = src.name.removesuffix("-bf16")
    if method == "w8a8":
        return src.parent / f"{base}-W8A8-gptq"
    return src.parent / f"{base}-W4A16-{method}-g{group_size}"


def quantize_hf(
    src: Path,
    method: HfMethod,
    *,
    out_dir: Path | None = None,
    group_size: int = 64,
    calibration: Path = CALIBRATION_TEXT,
    num_samples: int = 64,
    bf16_dir: Path | None = None,
) -> Path:
    """Quantize an HF checkpoint (or a GGUF, first de-quantized to a bf16 HF checkpoint).

    ``group_size`` applies to W4A16: 64 divides the 576-wide layers of the default model, 128
    does not. W8A8 is SmoothQuant + GPTQ INT8 weights with per-token INT8 activations."""
    if src.is_file() and src.suffix == ".gguf":
        hf_dir = bf16_dir or src.parent / (src.name.split(".")[0] + "-bf16")
        src = gguf_to_hf_bf16(src, hf_dir)
    out = out_dir or hf_output_dir(src, method, group_size)
    if method == "w8a8":
        return quantize(src, out, "W8A8", "gptq", calibration_text=calibration, num_samples=num_samples)
    return quantize(
        src, out, "W4A16", method, group_size=group_size, calibration_text=calibration, num_samples=num_samples
    )
