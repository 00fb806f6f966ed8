"""The GGUF ladder the toolkit tests share: the default Q4_1 de-quantized to F16 (cached in the
models cache, like the other fixtures), and Q8_0 / Q4_K_M / Q2_K quantized from it per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import DEFAULT_MODELS_DIR
from toolkit.dequant import dequantize_gguf, f16_source
from toolkit.quantize_gguf import quantize_gguf, quantized_path


@pytest.fixture(scope="session")
def f16_gguf(model_path: Path) -> Path:
    dst = f16_source(DEFAULT_MODELS_DIR, model_path)
    if not dst.is_file():
        dequantize_gguf(model_path, dst)
    return dst


@pytest.fixture(scope="session")
def ladder(f16_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ladder")
    paths = {"F16": f16_gguf}
    for qtype in ("Q8_0", "Q4_K_M", "Q2_K"):
        paths[qtype] = quantize_gguf(f16_gguf, quantized_path(f16_gguf, qtype, out), qtype, threads=2).path
    return paths
