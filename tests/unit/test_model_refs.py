"""Model references: what a user types, and which GGUF file of a repo it picks."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.errors import ConfigError
from server.runtime.model_refs import HubRef, default_model_id, parse_ref, pick_gguf, quant_of, split_parts

GiB = 1 << 30


def test_references_as_users_write_them(tmp_path: Path) -> None:
    local = tmp_path / "m.gguf"
    local.write_bytes(b"x")
    assert parse_ref(str(local)) == local
    assert parse_ref("Qwen/Qwen2.5-0.5B-Instruct-GGUF") == HubRef("Qwen/Qwen2.5-0.5B-Instruct-GGUF")
    assert parse_ref("Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m") == HubRef("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "q4_k_m")
    assert parse_ref("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0") == HubRef(
        "bartowski/Llama-3.2-1B-Instruct-GGUF", "Q8_0"
    )
    assert parse_ref("hf://org/repo/sub/model-Q4_0.gguf") == HubRef("org/repo", filename="sub/model-Q4_0.gguf")
    # Paths that do not exist stay paths (the server then says "does not exist"), never hub ids.
    assert parse_ref("models/missing.gguf") == Path("models/missing.gguf")
    assert parse_ref("./org/repo") == Path("org/repo")
    with pytest.raises(ConfigError, match=r"hf://org/repo/file\.gguf"):
        parse_ref("hf://org/repo")


def test_ids_of_served_references(tmp_path: Path) -> None:
    assert default_model_id("x", tmp_path / "SmolLM2.Q4_1.gguf") == "SmolLM2.Q4_1"
    assert default_model_id("org/repo:Q4_K_M", HubRef("org/repo", "Q4_K_M")) == "org/repo:Q4_K_M"


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("Llama-3.2-1B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
        ("big-Q8_0-00002-of-00003.gguf", "Q8_0"),
        ("model-f16.gguf", "F16"),
        ("model.gguf", None),
    ],
)
def test_quantization_from_the_file_name(name: str, quant: str | None) -> None:
    assert quant_of(name) == quant


REPO = {
    "m-Q2_K.gguf": 1 * GiB,
    "m-Q4_K_M.gguf": 2 * GiB,
    "m-Q8_0.gguf": 4 * GiB,
    "big/m-F16-00001-of-00002.gguf": 4 * GiB,
    "big/m-F16-00002-of-00002.gguf": 4 * GiB,
    "mmproj-m-f16.gguf": 1 * GiB,
    "README.md": 10,
}


def test_q4_k_m_first_when_it_fits() -> None:
    assert pick_gguf(HubRef("o/r"), REPO, available=100 * GiB) == "m-Q4_K_M.gguf"


def test_the_best_that_fits_otherwise() -> None:
    # Only 2 GiB of memory: Q4_K_M (2 GiB) leaves no room for the KV cache; Q2_K does.
    assert pick_gguf(HubRef("o/r"), REPO, available=2 * GiB) == "m-Q2_K.gguf"
    # Nothing fits: the smallest, and the memory planner has the last word at load time.
    assert pick_gguf(HubRef("o/r"), REPO, available=GiB // 4) == "m-Q2_K.gguf"


def test_a_named_quantization_and_a_split_file() -> None:
    assert pick_gguf(HubRef("o/r", "q8_0"), REPO, None) == "m-Q8_0.gguf"
    first = pick_gguf(HubRef("o/r", "F16"), REPO, None)
    assert first == "big/m-F16-00001-of-00002.gguf"
    assert split_parts(first, list(REPO)) == ["big/m-F16-00001-of-00002.gguf", "big/m-F16-00002-of-00002.gguf"]
    with pytest.raises(ConfigError, match=r"no Q5_K_M GGUF file; it has: F16, Q2_K, Q4_K_M, Q8_0"):
        pick_gguf(HubRef("o/r", "Q5_K_M"), REPO, None)
    with pytest.raises(ConfigError, match=r"missing big/m-F16-00002-of-00002\.gguf"):
        split_parts(first, [first])
