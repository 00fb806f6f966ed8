"""``quantserve inspect`` and ``quantserve quantize`` through the real CLI (in process)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from server.cli.main import app
from toolkit.gguf_inspect import inspect_model


def test_inspect_gguf_prints_types_and_memory_plan(model_path: Path) -> None:
    result = CliRunner().invoke(app, ["inspect", str(model_path), "--n-ctx", "2048", "--parallel", "2"])
    assert result.exit_code == 0, result.output
    assert "format:          gguf (Q4_1)" in result.output
    assert "parameters:      134,515,008" in result.output
    assert "Q4_1 x210" in result.output and "F32 x61" in result.output and "Q8_0 x1" in result.output
    assert "chat template:   yes" in result.output
    assert "(4096 tokens, k:f16,v:f16)" in result.output and "-> fits" in result.output


def test_inspect_refuses_unknown_kv_type(model_path: Path) -> None:
    result = CliRunner().invoke(app, ["inspect", str(model_path), "--kv-type", "q3_x"])
    assert result.exit_code == 1
    assert "unknown KV cache type 'q3_x'" in result.output


def test_quantize_command_writes_the_requested_type(f16_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "smol.Q4_0.gguf"
    result = CliRunner().invoke(app, ["quantize", str(f16_gguf), "--type", "q4_0", "--out", str(out), "--threads", "2"])
    assert result.exit_code == 0, result.output
    report = inspect_model(out)
    assert report.file_type == "Q4_0"
    assert "Q4_0" in report.type_mix


def test_quantize_refuses_an_unknown_type(f16_gguf: Path) -> None:
    result = CliRunner().invoke(app, ["quantize", str(f16_gguf), "--type", "Q1_X"])
    assert result.exit_code == 1
    assert "unknown --type 'Q1_X'" in result.output
