"""What a model file holds: architecture, parameters, tensor type mix, bits per weight, context,
chat template (GGUF), or the quantization_config (HF directory)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.formats import detect_format, gguf_file_type_name
from backends.types import ModelFormat


@dataclass(frozen=True, slots=True)
class ModelReport:
    path: Path
    format: str
    architecture: str
    parameters: int
    file_bytes: int
    context_length: int
    chat_template: bool
    file_type: str = ""
    type_mix: dict[str, int] = field(default_factory=dict)  # tensor type -> tensor count
    type_params: dict[str, int] = field(default_factory=dict)  # tensor type -> parameters
    bits_per_weight: float = 0.0
    quantization_config: dict[str, Any] | None = None


def inspect_model(path: Path) -> ModelReport:
    path = Path(path).expanduser()
    if detect_format(path) is ModelFormat.GGUF:
        return inspect_gguf(path)
    return inspect_hf(path)


def inspect_gguf(path: Path) -> ModelReport:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def meta(key: str, default: Any = None) -> Any:
        f = reader.fields.get(key)
        return default if f is None else f.contents()

    arch = str(meta("general.architecture", "unknown"))
    mix: Counter[str] = Counter()
    params: Counter[str] = Counter()
    tensor_bytes = 0
    for t in reader.tensors:
        mix[t.tensor_type.name] += 1
        params[t.tensor_type.name] += int(t.n_elements)
        tensor_bytes += int(t.n_bytes)
    n_params = sum(params.values())
    file_type = meta("general.file_type")
    return ModelReport(
        path=path,
        format="gguf",
        architecture=arch,
        parameters=n_params,
        file_bytes=path.stat().st_size,
        context_length=int(meta(f"{arch}.context_length", 0)),
        chat_template=meta("tokenizer.chat_template") is not None,
        file_type=gguf_file_type_name(file_type, str(file_type)) if file_type is not None else "",
        type_mix=dict(mix.most_common()),
        type_params=dict(params.most_common()),
        bits_per_weight=8 * tensor_bytes / max(n_params, 1),
    )


def inspect_hf(model_dir: Path) -> ModelReport:
    """An HF checkpoint: parameters and bits per weight from the safetensors headers."""
    cfg = json.loads((model_dir / "config.json").read_text())
    n_params = 0
    weight_bytes = 0
    mix: Counter[str] = Counter()
    params: Counter[str] = Counter()
    for shard in sorted(model_dir.glob("*.safetensors")):
        for name, info in _safetensors_header(shard).items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            start, end = info["data_offsets"]
            weight_bytes += int(end) - int(start)
            mix[str(info["dtype"])] += 1
            params[str(info["dtype"])] += count
            # packed int4 weights, scales and zero points are storage, not parameters
            if not name.endswith(("_scale", "_zero_point", "_shape", "_g_idx")):
                n_params += count * (8 if name.endswith("weight_packed") else 1)
    tok_cfg = model_dir / "tokenizer_config.json"
    template = (model_dir / "chat_template.jinja").is_file() or (
        tok_cfg.is_file() and "chat_template" in json.loads(tok_cfg.read_text())
    )
    return ModelReport(
        path=model_dir,
        format=detect_format(model_dir).value,
        architecture=",".join(cfg.get("architectures", [])) or str(cfg.get("model_type", "unknown")),
        parameters=n_params,
        file_bytes=sum(p.stat().st_size for p in model_dir.glob("*.safetensors")),
        context_length=int(cfg.get("max_position_embeddings", 0)),
        chat_template=template,
        type_mix=dict(mix.most_common()),
        type_params=dict(params.most_common()),
        bits_per_weight=8 * weight_bytes / max(n_params, 1),
        quantization_config=cfg.get("quantization_config"),
    )


def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header: dict[str, Any] = json.loads(f.read(size))
    return header
