"""``n_gpu_layers``: how many layers llama.cpp offloads, decided before the model loads.

``auto`` (the default) offloads every layer when this llama.cpp build has a GPU backend and the
device has room for the weights and KV cache the memory planner counts, as many layers as fit
when it has not, and none on a CPU-only build. An explicit count is taken as given, except on a
CPU-only build, where it is a configuration error rather than a silent CPU run.

The devices and their free memory come from ggml's backend device API
(``ggml_backend_dev_count`` / ``_get`` / ``_type`` / ``_memory``), which the pinned bindings
(llama-cpp-python 0.3.36) do not wrap in Python but whose symbols the bundled ``libggml`` exports:
it answers for every backend (CUDA, Metal, Vulkan...) about the very devices llama.cpp will use,
without torch. ``nvidia-smi`` is the fallback for a build whose libggml lacks those symbols.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from backends.device import device_label
from backends.errors import ConfigError
from backends.memplan import GiB, LlamaLayout, gib

log = logging.getLogger(__name__)

# Device memory kept free beyond weights + KV: compute buffers, the CUDA graphs, the runtime's own
# allocations. 1 GiB is llama.cpp's own margin when it fits a model to a device (--fit-target).
DEVICE_MARGIN = 1 * GiB
# enum ggml_backend_dev_type (ggml-backend.h): the device kinds llama.cpp offloads layers to.
_GGML_DEV_GPU, _GGML_DEV_IGPU = 1, 2
GPU_BUILD_FIX = "reinstall with QUANTSERVE_GPU=cuda bash scripts/install.sh (see docs/gpu.md)"

GpuLayers = int | Literal["auto"]


@dataclass(frozen=True, slots=True)
class GpuDevice:
    name: str  # ggml's device name, e.g. "CUDA0"
    description: str  # e.g. "NVIDIA H100 80GB HBM3"
    backend: str  # ggml's backend registry name: "CUDA", "MTL", "Vulkan", ...
    free_bytes: int | None


@dataclass(frozen=True, slots=True)
class BuildDevices:
    """What this llama.cpp build can offload to, and how much room those devices have now."""

    supports_offload: bool
    gpus: tuple[GpuDevice, ...] = ()
    source: str = "ggml"  # where the free memory came from: "ggml" or "nvidia-smi"

    @property
    def free_bytes(self) -> int | None:
        """Free memory over every GPU (llama.cpp splits layers across them); None: unknown."""
        known = [g.free_bytes for g in self.gpus if g.free_bytes is not None]
        return sum(known) if known and len(known) == len(self.gpus) else None

    @property
    def label(self) -> str:
        """The device label when layers are offloaded: from the build's backend, not guessed."""
        return device_label(self.gpus[0].backend) if self.gpus else "cpu"

    @property
    def names(self) -> str:
        return ", ".join(f"{g.name} ({g.description})" for g in self.gpus) or "the GPU"

    @property
    def place(self) -> str:
        return f"the device memory of {self.names}"


@dataclass(frozen=True, slots=True)
class OffloadChoice:
    n_gpu_layers: int  # what llama.cpp gets: n_layer + 1 is every layer and the output layer
    reason: str


def choose_gpu_layers(
    *,
    supports_offload: bool,
    n_layer: int,
    layer_bytes: Sequence[int],
    output_bytes: int,
    free_bytes: int | None,
    margin_bytes: int = DEVICE_MARGIN,
) -> OffloadChoice:
    """The ``auto`` decision. ``layer_bytes``: weights + KV of each repeating layer; llama.cpp
    offloads the LAST n of them, and the output layer (``output_bytes``) only with all of them."""
    if not supports_offload:
        return OffloadChoice(0, f"this llama.cpp build is CPU-only; to offload, {GPU_BUILD_FIX}")
    everything = sum(layer_bytes) + output_bytes
    if free_bytes is None:
        return OffloadChoice(n_layer + 1, "the device's free memory is unknown, so every layer is offloaded")
    budget = free_bytes - margin_bytes
    room = f"{gib(free_bytes)} free, {gib(margin_bytes)} kept for compute buffers"
    if everything <= budget:
        return OffloadChoice(n_layer + 1, f"all {n_layer} layers fit: {gib(everything)} weights + KV; {room}")
    used, n = 0, 0
    for size in reversed(layer_bytes):
        if used + size > budget:
            break
        used, n = used + size, n + 1
    if n == 0:
        return OffloadChoice(0, f"not one layer fits: {gib(max(layer_bytes, default=0))} per layer; {room}")
    return OffloadChoice(
        n, f"{n} of {n_layer} layers fit ({gib(used)} weights + KV of {gib(everything)} for all); {room}"
    )


def resolve(option: GpuLayers, devices: BuildDevices, layout: LlamaLayout | None, model_id: str) -> OffloadChoice:
    """The layer count llama.cpp gets for ``option``; ``layout`` None: the GGUF header was unreadable
    (llama.cpp will say why when it loads)."""
    if option != "auto":
        return explicit_choice(option, devices, model_id)
    if layout is None:
        return OffloadChoice(0, "the GGUF header could not be read")
    return choose_gpu_layers(
        supports_offload=devices.supports_offload,
        n_layer=layout.n_layer,
        layer_bytes=layout.layer_bytes(),
        output_bytes=layout.shape.output_bytes,
        free_bytes=devices.free_bytes,
    )


def explicit_choice(n_gpu_layers: int, devices: BuildDevices, model_id: str) -> OffloadChoice:
    """An ``n_gpu_layers`` count from the config or ``--n-gpu-layers``; refused on a CPU build,
    where llama.cpp would quietly run on the CPU instead."""
    if n_gpu_layers != 0 and not devices.supports_offload:
        raise ConfigError(
            f"model {model_id!r}: options.n_gpu_layers={n_gpu_layers} needs a llama.cpp build with GPU offload, "
            f"but this one is CPU-only; set n_gpu_layers to auto or 0, or {GPU_BUILD_FIX}"
        )
    return OffloadChoice(n_gpu_layers, "as configured")


def query_devices() -> BuildDevices:
    """The build's GPU devices with their free memory (imports llama_cpp: call it at start-up)."""
    import llama_cpp as lc

    if not lc.llama_supports_gpu_offload():
        return BuildDevices(supports_offload=False)
    gpus = _ggml_gpus()
    if gpus is not None:
        return BuildDevices(True, gpus, "ggml")
    return BuildDevices(True, _nvidia_smi_gpus(), "nvidia-smi")


def _ggml_gpus() -> tuple[GpuDevice, ...] | None:
    """GPU devices through ggml's device API; None when this libggml does not export it."""
    from llama_cpp import _ggml

    # A CDLL of our own over the already-loaded library: its function signatures are declared
    # here without touching the bindings' objects.
    lib = ctypes.CDLL(_ggml.libggml._name, mode=ctypes.RTLD_GLOBAL)
    needed = ("ggml_backend_dev_count", "ggml_backend_dev_get", "ggml_backend_dev_type", "ggml_backend_dev_memory")
    if not all(hasattr(lib, name) for name in needed):
        return None
    p, size_p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)
    _sig(lib.ggml_backend_dev_count, ctypes.c_size_t)
    _sig(lib.ggml_backend_dev_get, p, ctypes.c_size_t)
    _sig(lib.ggml_backend_dev_type, ctypes.c_int, p)
    _sig(lib.ggml_backend_dev_name, ctypes.c_char_p, p)
    _sig(lib.ggml_backend_dev_description, ctypes.c_char_p, p)
    _sig(lib.ggml_backend_dev_backend_reg, p, p)
    _sig(lib.ggml_backend_reg_name, ctypes.c_char_p, p)
    _sig(lib.ggml_backend_dev_memory, None, p, size_p, size_p)
    gpus = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(dev) not in (_GGML_DEV_GPU, _GGML_DEV_IGPU):
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        gpus.append(
            GpuDevice(
                name=_text(lib.ggml_backend_dev_name(dev)),
                description=_text(lib.ggml_backend_dev_description(dev)),
                backend=_text(lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(dev))),
                free_bytes=int(free.value) if total.value else None,
            )
        )
    return tuple(gpus)


def _nvidia_smi_gpus() -> tuple[GpuDevice, ...]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    query = [smi, "--query-gpu=index,name,memory.free", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[2].isdigit():  # memory.free in MiB
            gpus.append(GpuDevice(f"CUDA{parts[0]}", parts[1], "CUDA", int(parts[2]) << 20))
    return tuple(gpus)


def _sig(fn: Any, restype: Any, *argtypes: Any) -> None:
    fn.restype = restype
    fn.argtypes = argtypes


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", errors="replace") if raw else "?"
