"""How a vLLM engine that will not start is explained: the root cause picked out of the engine's
log lines, matched to a known cause with its remedy, paths scrubbed. The real start-up failures
are exercised in tests/vllm; these pin the mapping on the log lines vLLM actually writes."""

from __future__ import annotations

import pytest

from backends.vllm.startup import describe, last_exception_line, startup_error

ENGINE_LOG = [
    "WARNING 11-24 10:00:01 [cpu.py:120] Pin memory is not supported on CPU.",
    "ERROR 11-24 10:00:02 [core.py:700] EngineCore failed to start.",
    "ERROR 11-24 10:00:02 [core.py:700] Traceback (most recent call last):",
    'ERROR 11-24 10:00:02 [core.py:700]   File "/opt/venv/lib/python3.11/site-packages/vllm/x.py", line 3',
    "ERROR 11-24 10:00:02 [core.py:700] AttributeError: '_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'",
    "ERROR 11-24 10:00:03 [async_llm.py:90] RuntimeError: Engine core initialization failed. See root cause above.",
    "ERROR 11-24 10:00:03 [async_llm.py:91] vllm.v1.engine.exceptions.EngineDeadError: EngineCore failed.",
]


def test_root_cause_skips_vllms_wrappers_and_generic_lines() -> None:
    assert last_exception_line(ENGINE_LOG) == (
        "AttributeError: '_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'"
    )
    assert last_exception_line(["INFO all fine", "WARNING still fine"]) is None


@pytest.mark.parametrize(
    ("root", "cause", "remedy"),
    [
        ("AttributeError: no attribute 'cpu_gemm_wna16'", "4-bit weight-only", "CUDA GPU"),
        ("ValueError: fp8_e4m3 kv cache is not supported", "KV cache quantized", "kv_cache_dtype: auto"),
        ("ValueError: No available memory for the cache blocks", "not enough memory", "Lower max_model_len"),
        ("NotImplementedError: awq is not supported on CPU", "not supported by vLLM on this device", "CUDA GPU"),
    ],
)
def test_known_causes_name_the_cause_and_the_remedy(root: str, cause: str, remedy: str) -> None:
    err = startup_error("m", "checkpoint X on vLLM-CPU", RuntimeError("wrapper"), root)
    assert err.message.startswith("model 'm' (checkpoint X on vLLM-CPU) cannot start: ")
    assert cause in err.message and remedy in err.message
    assert root.split(": ", 1)[1] in err.message  # the raw cause is still shown


def test_an_unknown_cause_is_shown_scrubbed_and_short() -> None:
    root = "OSError: cannot open /home/alice/models/secret-dir/weights.safetensors: " + "x" * 600
    err = startup_error("m", "w", RuntimeError("wrapper"), root)
    assert err.message.startswith("model 'm' (w) failed to start: OSError: cannot open weights.safetensors")
    assert "/home/alice" not in err.message
    assert len(err.message) < 480 and err.message.endswith("…")


def test_without_a_logged_root_cause_the_exception_itself_is_described() -> None:
    exc = ValueError("1 validation error for VllmConfig\nmax_model_len\n  must be positive\nFor further info")
    assert describe(exc) == "ValueError: 1 validation error for VllmConfig | max_model_len | must be positive"
    assert "must be positive" in startup_error("m", "w", exc, None).message
