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


# GGUF general.file_type -> the name users know (llama.cpp's LLAMA_FTYPE_MOSTLY_*).
GGUF_FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
}  # fmt: skip


def gguf_file_type_name(value: object, unknown: str = "unknown") -> str:
    """``general.file_type`` (an int, or its text as llama.cpp's metadata gives it) as a name."""
    try:
        return GGUF_FILE_TYPES.get(int(str(value)), unknown)
    except ValueError:
        return unknown
