from pathlib import Path

import pytest

from backends.errors import ConfigError
from server.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings()
    assert (s.host, s.port, s.api_keys, s.models) == ("127.0.0.1", 8000, (), ())


def test_precedence_explicit_over_env_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path, "port: 9001\nhost: 0.0.0.0\nlog_level: warning\n")
    assert load_settings(config).port == 9001
    monkeypatch.setenv("QUANTSERVE_PORT", "9002")
    s = load_settings(config)
    assert (s.port, s.host, s.log_level) == (9002, "0.0.0.0", "warning")  # env wins only where set
    assert load_settings(config, port=9003).port == 9003


def test_models_from_yaml_with_backend_options(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "models:\n  - id: small\n    path: ~/m.gguf\n    backend: llama_cpp\n"
        "    options: {n_ctx: 2048, cache_type_k: q8_0}\n",
    )
    (model,) = load_settings(config).models
    assert model.id == "small"
    assert model.path == Path("~/m.gguf").expanduser()
    assert model.options == {"n_ctx": 2048, "cache_type_k": "q8_0"}


def test_nested_env_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTSERVE_API_KEYS", '["k1", "k2"]')
    monkeypatch.setenv("QUANTSERVE_MODELS", '[{"id": "a", "path": "/x.gguf"}]')
    s = load_settings()
    assert s.api_keys == ("k1", "k2")
    assert s.models[0].id == "a"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("prot: 8000\n", "prot: Extra inputs are not permitted"),
        ("models:\n  - id: a\n    path: /x.gguf\n    backnd: vllm\n", "models.0.backnd: Extra inputs"),
        ("models:\n  - id: a\n    path: /x.gguf\n    backend: tensorrt\n", "models.0.backend: Input should be"),
        ("port: high\n", "port: Input should be a valid integer"),
    ],
)
def test_a_typo_in_the_config_names_the_field(tmp_path: Path, text: str, needle: str) -> None:
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert needle in err.value.message
    assert str(config) in err.value.message


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
