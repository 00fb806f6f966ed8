"""``n_gpu_layers`` on the llama.cpp build installed here, a CPU-only one: ``auto`` loads with 0
layers and one log line saying why; an explicit count is a one-line config error (exit 2)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import llama_cpp  # noqa: F401  # at collection, as the other engine tests: see below
import pytest

from backends.device import detect_device
from backends.errors import ConfigError
from backends.formats import detect_format
from backends.llama_cpp.offload import query_devices
from backends.registry import create_backend
from backends.types import ModelSpec

# llama_cpp opens two /dev/null files at import and never closes them; imported first inside a test
# (warnings as errors) that is reported at exit, so the import above happens at collection.


@pytest.fixture(scope="module", autouse=True)
def cpu_build() -> None:
    if query_devices().supports_offload:
        pytest.skip("this llama.cpp build can offload; these tests are about a CPU-only build")


def spec(model_path: Path, **options: object) -> ModelSpec:
    return ModelSpec(id="m", path=model_path, format=detect_format(model_path), options={"n_ctx": 512, **options})


def test_cpu_build_reports_no_gpu() -> None:
    devices = query_devices()
    assert devices.gpus == () and devices.label == "cpu"


async def test_auto_loads_on_the_cpu_with_one_line_saying_why(
    model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = create_backend(spec(model_path), detect_device())
    with caplog.at_level(logging.INFO, logger="backends.llama_cpp"):
        await backend.start()
    try:
        lines = [r.getMessage() for r in caplog.records if "n_gpu_layers" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "n_gpu_layers auto -> 0" in lines[0] and "CPU-only" in lines[0]
        assert backend.info().device == "cpu"
    finally:
        await backend.stop()


async def test_explicit_layers_on_a_cpu_build_is_refused(model_path: Path) -> None:
    backend = create_backend(spec(model_path, n_gpu_layers=5), detect_device())
    with pytest.raises(ConfigError, match=r"options\.n_gpu_layers=5 needs a llama\.cpp build with GPU offload"):
        await backend.start()


def test_serve_flag_on_a_cpu_build_exits_as_a_config_error() -> None:
    cmd = [sys.executable, "-m", "server", "serve", "--port", "0", "--n-gpu-layers", "5"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "n_gpu_layers=5" in errors[0] and "QUANTSERVE_GPU=cuda" in errors[0]
    assert "Traceback" not in result.stderr
