"""De-quantization keeps the model (metadata, shapes) and llama.cpp's quantizer writes the types
inspect reports."""

from __future__ import annotations

from pathlib import Path

from gguf import GGUFReader

from toolkit.gguf_inspect import inspect_model

K_BLOCK = 256  # K-quants pack 256 weights per block: rows of another width fall back


def test_f16_source_keeps_every_key_and_tensor(model_path: Path, f16_gguf: Path) -> None:
    src, dst = GGUFReader(str(model_path)), GGUFReader(str(f16_gguf))
    assert set(src.fields) == set(dst.fields)
    for key in ("tokenizer.chat_template", "llama.context_length", "tokenizer.ggml.tokens", "general.name"):
        assert src.fields[key].contents() == dst.fields[key].contents()
    assert [(t.name, list(t.shape)) for t in src.tensors] == [(t.name, list(t.shape)) for t in dst.tensors]
    report = inspect_model(f16_gguf)
    assert report.file_type == "F16"
    assert set(report.type_mix) == {"F16", "F32"}
    assert report.parameters == inspect_model(model_path).parameters == 134_515_008


def test_inspect_reports_the_type_mix(ladder: dict[str, Path]) -> None:
    f16 = GGUFReader(str(ladder["F16"]))
    matrices = [t for t in f16.tensors if len(t.shape) == 2]
    q8 = inspect_model(ladder["Q8_0"])
    assert q8.file_type == "Q8_0"
    assert q8.type_mix == {"Q8_0": len(matrices), "F32": len(f16.tensors) - len(matrices)}
    assert 8.0 < q8.bits_per_weight < 9.0  # 34 bytes per 32 weights, plus the F32 norms

    q4 = inspect_model(ladder["Q4_K_M"])
    assert q4.file_type == "Q4_K_M"
    types = {t.name: t.tensor_type.name for t in GGUFReader(str(ladder["Q4_K_M"])).tensors}
    for t in matrices:
        row = int(t.shape[0])  # GGUF shapes list the row width first
        k_quant = types[t.name].endswith("_K")
        # SmolLM2's 576-wide rows cannot hold 256-weight blocks: llama.cpp falls back for them.
        assert k_quant == (row % K_BLOCK == 0), (t.name, row, types[t.name])
    assert sum(q4.type_mix.values()) == len(f16.tensors)
    assert q4.bits_per_weight < q8.bits_per_weight


def test_inspect_hf_checkpoint_shows_its_quantization_config(model_path: Path) -> None:
    from toolkit.hf_prepare import default_fixtures, is_complete

    w4 = default_fixtures(model_path.parent)["w4a16"]
    if not is_complete(w4):
        import pytest

        pytest.skip("the W4A16 fixture is built by `quantserve models prepare --vllm` (scripts/test.sh runs it)")
    report = inspect_model(w4)
    assert report.format == "compressed-tensors"
    assert report.quantization_config is not None
    weights = report.quantization_config["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"]) == (4, 64)
    assert report.parameters == 134_515_008
