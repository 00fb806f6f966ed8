"""GPTQ and AWQ checkpoints made by llm-compressor are routed to vLLM by their config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.device import detect_device
from backends.formats import detect_format
from backends.registry import select_backend
from backends.types import ModelFormat, ModelSpec
from toolkit.hf_prepare import default_fixtures, is_complete


@pytest.mark.parametrize(("fixture", "modifier"), [("w4a16", "GPTQModifier"), ("w4a16_awq", "AWQModifier")])
def test_w4a16_checkpoints_route_to_vllm(fixture: str, modifier: str, model_path: Path) -> None:
    path = default_fixtures(model_path.parent)[fixture]
    if not is_complete(path):
        pytest.skip(f"{path.name} is built by `quantserve models prepare --vllm` (scripts/test.sh runs it)")
    fmt = detect_format(path)
    assert fmt is ModelFormat.COMPRESSED_TENSORS
    weights = json.loads((path / "config.json").read_text())["quantization_config"]["config_groups"]
    assert (weights["group_0"]["weights"]["num_bits"], weights["group_0"]["weights"]["group_size"]) == (4, 64)
    assert modifier in (path / "recipe.yaml").read_text()  # llm-compressor records the algorithm it ran
    selection = select_backend(ModelSpec(id=fixture, path=path, format=fmt), detect_device())
    assert selection.backend.name == "vllm"
    assert selection.reasons == ("llama_cpp: serves GGUF files only, not compressed-tensors",)
