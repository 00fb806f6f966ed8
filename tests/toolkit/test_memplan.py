"""The start-up memory planner: KV sizes from the model's shape, and a refusal with numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backends import memplan
from backends.device import detect_device
from backends.errors import BackendStartupError
from backends.formats import detect_format
from backends.registry import create_backend
from backends.types import ModelSpec

# SmolLM2-135M: 30 layers x 3 KV heads x 64-wide heads, K and V.
VALUES_PER_TOKEN = 30 * 3 * 64 * 2


def test_kv_bytes_follow_the_cache_type(model_path: Path) -> None:
    sizes = {
        kv: memplan.plan_llama_cpp(model_path, n_ctx=4096, parallel=4, cache_type_k=kv, cache_type_v=kv).kv_bytes
        for kv in ("f16", "q8_0", "q4_0")
    }
    tokens = 4096 * 4
    assert sizes == {
        "f16": tokens * VALUES_PER_TOKEN * 2,
        "q8_0": tokens * VALUES_PER_TOKEN * 34 // 32,
        "q4_0": tokens * VALUES_PER_TOKEN * 18 // 32,
    }
    trained = memplan.plan_llama_cpp(model_path, n_ctx=0, parallel=1)
    assert trained.tokens == 8192  # n_ctx 0 is the model's trained context


def test_hf_config_gives_the_same_shape(model_path: Path) -> None:
    from toolkit.hf_prepare import default_fixtures

    bf16 = default_fixtures(model_path.parent)["bf16"]
    if not (bf16 / "config.json").is_file():
        pytest.skip("the bf16 fixture is built by `quantserve models prepare --vllm`")
    plan = memplan.plan_vllm(bf16, max_model_len=2048, max_num_seqs=2, kv_cache_dtype="auto")
    assert plan.kv_bytes == 2048 * 2 * VALUES_PER_TOKEN * 2
    fp8 = memplan.plan_vllm(bf16, max_model_len=2048, max_num_seqs=2, kv_cache_dtype="fp8")
    assert fp8.kv_bytes == plan.kv_bytes // 2


def test_plan_refuses_what_does_not_fit(model_path: Path) -> None:
    plan = memplan.plan_llama_cpp(model_path, n_ctx=4096, parallel=4, available=100 << 20)
    assert not plan.fits
    with pytest.raises(BackendStartupError, match=r"cannot fit.*KV cache 0\.35 GiB \(16384 tokens, k:f16,v:f16\)"):
        memplan.require_fit("m", plan)


async def test_absurd_context_is_refused_at_start_up(model_path: Path) -> None:
    spec = ModelSpec(
        id="huge", path=model_path, format=detect_format(model_path), options={"n_ctx": 1_000_000, "parallel": 256}
    )
    backend = create_backend(spec, detect_device())
    with pytest.raises(BackendStartupError) as info:
        await backend.start()
    message = info.value.message
    assert "model 'huge' cannot fit in this machine's memory" in message
    assert "256000000 tokens" in message and "available" in message and "GiB" in message
    await backend.stop()


def test_serve_exits_with_the_plan_instead_of_being_killed(tmp_path: Path, model_path: Path) -> None:
    config = tmp_path / "huge.yaml"
    config.write_text(f"models:\n  - {{id: huge, path: {model_path}, options: {{n_ctx: 1000000, parallel: 256}}}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", "0", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "cannot fit in this machine's memory" in result.stderr and "KV cache" in result.stderr
    assert "Traceback" not in result.stderr
