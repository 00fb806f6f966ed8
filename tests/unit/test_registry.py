import json
from pathlib import Path

import pytest

from backends.errors import ConfigError
from backends.formats import detect_format
from backends.registry import create_backend, load_backend_class, select_backend
from backends.types import Device, ModelFormat, ModelSpec

CPU = Device(kind="cpu")


def hf_dir(tmp_path: Path, quant_method: str | None, *, weights: bool = True) -> Path:
    config: dict[str, object] = {"architectures": ["LlamaForCausalLM"]}
    if quant_method:
        config["quantization_config"] = {"quant_method": quant_method, "bits": 4}
    (tmp_path / "config.json").write_text(json.dumps(config))
    if weights:
        (tmp_path / "model.safetensors").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("awq", ModelFormat.AWQ),
        ("gptq", ModelFormat.GPTQ),
        ("compressed-tensors", ModelFormat.COMPRESSED_TENSORS),
        ("fp8", ModelFormat.FP8),
        (None, ModelFormat.SAFETENSORS),
    ],
)
def test_hf_directory_format_comes_from_its_quantization_config(
    tmp_path: Path, method: str | None, expected: ModelFormat
) -> None:
    assert detect_format(hf_dir(tmp_path, method)) is expected


def test_gguf_file_is_detected(model_path: Path) -> None:
    assert detect_format(model_path) is ModelFormat.GGUF


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "weights.bin").write_bytes(b"x") and p / "weights.bin", "not a .gguf"),
        (lambda p: p, "no config.json"),
        (lambda p: hf_dir(p, "bitsandbytes"), "unsupported quant_method 'bitsandbytes'"),
        (lambda p: hf_dir(p, None, weights=False), "neither safetensors"),
    ],
)
def test_unusable_paths_say_why(tmp_path: Path, setup: object, needle: str) -> None:
    path = setup(tmp_path)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=needle):
        detect_format(path)


def test_auto_picks_llama_cpp_for_gguf(model_path: Path) -> None:
    spec = ModelSpec(id="m", path=model_path, format=ModelFormat.GGUF)
    selection = select_backend(spec, CPU)
    assert selection.backend.name == "llama_cpp"
    assert selection.reasons == ()


def test_llama_cpp_explains_why_it_cannot_serve_awq(tmp_path: Path) -> None:
    spec = ModelSpec(id="awq-model", path=hf_dir(tmp_path, "awq"), format=ModelFormat.AWQ, backend="llama_cpp")
    with pytest.raises(ConfigError) as err:
        select_backend(spec, CPU)
    message = err.value.message
    assert "awq-model" in message
    assert "llama_cpp: serves GGUF files only, not awq" in message


def test_unknown_backend_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown backend 'tensorrt'.*auto, llama_cpp, vllm"):
        load_backend_class("tensorrt")


def test_option_typo_fails_naming_the_field(model_path: Path) -> None:
    spec = ModelSpec(id="m", path=model_path, format=ModelFormat.GGUF, options={"n_ctxx": 512})
    with pytest.raises(ConfigError, match=r"model 'm' \(llama_cpp\): options.n_ctxx: Extra inputs are not permitted"):
        create_backend(spec, CPU)


def test_n_batch_below_parallel_is_refused(model_path: Path) -> None:
    spec = ModelSpec(id="m", path=model_path, format=ModelFormat.GGUF, options={"parallel": 8, "n_batch": 4})
    with pytest.raises(ConfigError, match=r"n_batch \(4\) must be at least parallel \(8\)"):
        create_backend(spec, CPU)


def test_quantized_v_cache_without_flash_attention_is_refused(model_path: Path) -> None:
    spec = ModelSpec(
        id="m", path=model_path, format=ModelFormat.GGUF, options={"cache_type_v": "q8_0", "flash_attn": False}
    )
    with pytest.raises(ConfigError, match="cache_type_v=q8_0 needs flash_attn: true"):
        create_backend(spec, CPU)
