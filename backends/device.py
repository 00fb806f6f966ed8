"""Which accelerator this machine has (found without importing an engine), and the device label
a model reports."""

from __future__ import annotations

import platform
import shutil
import subprocess

from backends.types import Device


def detect_device() -> Device:
    """CUDA if ``nvidia-smi`` lists a GPU, Metal on Apple silicon, else the CPU."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        gpus = [line for line in out.splitlines() if line.startswith("GPU ")]
        if gpus:
            return Device(kind="cuda", name=gpus[0].split(":", 1)[-1].split("(")[0].strip(), gpu_count=len(gpus))
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return Device(kind="metal", name="apple-silicon", gpu_count=1)
    return Device(kind="cpu", name=platform.processor() or platform.machine())


# ggml's backend registry names (GGML_CUDA_NAME, GGML_METAL_NAME, GGML_VK_NAME, ...) -> our labels.
_GGML_BACKEND_LABELS = {"cuda": "cuda", "rocm": "rocm", "musa": "musa", "mtl": "metal", "metal": "metal"}


def device_label(ggml_backend: str | None) -> str:
    """The ``device`` label a llama.cpp model reports: the backend its layers were offloaded to
    (``cuda``, ``metal``, ``vulkan``, ...), or ``cpu`` when none were. It comes from the build and
    the device it found, never from the option alone."""
    if not ggml_backend:
        return "cpu"
    name = ggml_backend.lower()
    return _GGML_BACKEND_LABELS.get(name, name)
