"""Which accelerator this machine has, found without importing an engine."""

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
