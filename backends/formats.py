"""Detect a model's weight format from its path."""

from __future__ import annotations

import json
from pathlib import Path

from backends.errors import ConfigError
from backends.types import ModelFormat

# quant_method values written by llm-compressor, AutoAWQ/AutoGPTQ/GPTQModel and FP8 exporters.
_QUANT_METHODS = {
    "awq": ModelFormat.AWQ,
    "gptq": ModelFormat.GPTQ,
    "compressed-tensors": ModelFormat.COMPRESSED_TENSORS,
    "fp8": ModelFormat.FP8,
}


def detect_format(path: Path) -> ModelFormat:
    """A ``.gguf`` file, or an HF directory whose ``config.json`` says how it is quantized."""
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return ModelFormat.GGUF
        raise ConfigError(f"model file {path.name!r} is not a .gguf file")
    if not path.is_dir():
        raise ConfigError(f"model path {str(path)!r} does not exist")
    config = path / "config.json"
    if not config.is_file():
        ggufs = sorted(path.glob("*.gguf"))
        hint = f" (did you mean {ggufs[0].name}?)" if ggufs else ""
        raise ConfigError(f"model directory {path.name!r} has no config.json{hint}")
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path.name}/config.json: {exc}") from exc
    quant = data.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower()
    if method:
        if method not in _QUANT_METHODS:
            raise ConfigError(f"model {path.name!r} uses unsupported quant_method {method!r}")
        return _QUANT_METHODS[method]
    if any(path.glob("*.safetensors")):
        return ModelFormat.SAFETENSORS
    raise ConfigError(f"model directory {path.name!r} has neither safetensors weights nor a quantization_config")


def quantization_of(path: Path, fmt: ModelFormat) -> str:
    """A short label for the info metric and /v1/models (e.g. ``Q4_1``, ``gptq-w4a16``)."""
    if fmt is ModelFormat.GGUF:
        # "SmolLM2-135M-Instruct.Q4_1.gguf" -> "Q4_1"; the backend refines it from metadata.
        parts = path.stem.split(".")
        return parts[-1] if len(parts) > 1 else "gguf"
    if fmt is ModelFormat.SAFETENSORS:
        return "none"
    return str(fmt.value)
