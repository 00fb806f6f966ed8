"""``n_gpu_layers: auto`` as a pure decision, the device label, and where the planner puts each
layer's bytes (on the real default GGUF)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends import memplan
from backends.device import device_label
from backends.errors import BackendStartupError, ConfigError
from backends.gguf_header import read_header
from backends.llama_cpp.offload import (
    DEVICE_MARGIN,
    BuildDevices,
    GpuDevice,
    choose_gpu_layers,
    explicit_choice,
    resolve,
)

MiB = 1 << 20
H100 = GpuDevice("CUDA0", "NVIDIA H100 80GB HBM3", "CUDA", 79 << 30)


def choose(free: int | None, layers: tuple[int, ...] = (100 * MiB,) * 10, output: int = 50 * MiB) -> int:
    return choose_gpu_layers(
        supports_offload=True, n_layer=len(layers), layer_bytes=layers, output_bytes=output, free_bytes=free
    ).n_gpu_layers


def test_cpu_build_offloads_nothing_and_says_how_to_get_a_gpu_build() -> None:
    choice = choose_gpu_layers(
        supports_offload=False, n_layer=30, layer_bytes=(1,) * 30, output_bytes=1, free_bytes=None
    )
    assert choice.n_gpu_layers == 0
    assert "CPU-only" in choice.reason and "QUANTSERVE_GPU=cuda" in choice.reason


def test_everything_offloaded_when_it_fits() -> None:
    assert choose(DEVICE_MARGIN + 1050 * MiB) == 11  # 10 layers + the output layer
    choice = choose_gpu_layers(
        supports_offload=True, n_layer=10, layer_bytes=(100 * MiB,) * 10, output_bytes=50 * MiB, free_bytes=80 << 30
    )
    assert "all 10 layers fit" in choice.reason and "80.00 GiB free" in choice.reason


def test_as_many_layers_as_fit_when_not_all_do() -> None:
    assert choose(DEVICE_MARGIN + 1049 * MiB) == 10  # the output layer is the one left out
    assert choose(DEVICE_MARGIN + 350 * MiB) == 3
    assert choose(DEVICE_MARGIN + 99 * MiB) == 0
    assert choose(DEVICE_MARGIN // 2) == 0  # less free than the margin itself


def test_layers_are_counted_from_the_last_as_llama_cpp_offloads_them() -> None:
    # Small early layers do not make room for the big last ones.
    assert choose(DEVICE_MARGIN + 350 * MiB, layers=(10 * MiB,) * 5 + (300 * MiB,) * 2) == 1


def test_unknown_free_memory_offloads_everything() -> None:
    assert choose(None) == 11


def test_explicit_count_on_a_cpu_build_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        explicit_choice(5, BuildDevices(supports_offload=False), "m")
    message = info.value.message
    assert "options.n_gpu_layers=5" in message and "CPU-only" in message and "QUANTSERVE_GPU=cuda" in message
    assert "\n" not in message
    assert explicit_choice(0, BuildDevices(supports_offload=False), "m").n_gpu_layers == 0
    assert explicit_choice(5, BuildDevices(True, (H100,)), "m").n_gpu_layers == 5


def test_device_label_comes_from_the_backend_that_got_the_layers() -> None:
    assert [device_label(n) for n in ("CUDA", "MTL", "Vulkan", "ROCm", None)] == [
        "cuda",
        "metal",
        "vulkan",
        "rocm",
        "cpu",
    ]
    assert BuildDevices(True, (H100,)).label == "cuda"
    assert BuildDevices(True, (GpuDevice("MTL0", "Apple M3", "MTL", 8 << 30),)).label == "metal"
    assert BuildDevices(False).label == "cpu"


def test_free_memory_sums_the_gpus_and_is_unknown_if_one_cannot_say() -> None:
    assert BuildDevices(True, (H100, H100)).free_bytes == 2 * H100.free_bytes  # type: ignore[operator]
    assert BuildDevices(True, (H100, GpuDevice("CUDA1", "?", "CUDA", None))).free_bytes is None


def test_planner_splits_the_real_model_between_host_and_device(model_path: Path) -> None:
    layout = memplan.llama_layout(model_path, n_ctx=4096, parallel=4)
    header_bytes = sum(read_header(model_path).tensor_nbytes().values())
    n = layout.n_layer
    assert n == 30 and len(layout.layer_bytes()) == 30
    assert layout.on_device(0) == (0, 0)
    weights_all, kv_all = layout.on_device(-1)
    assert layout.on_device(n + 1) == (weights_all, kv_all)
    assert kv_all == layout.host_plan(0).kv_bytes == 4096 * 4 * 30 * 3 * 64 * 2 * 2
    # SmolLM2 ties its output to token_embd: llama.cpp keeps one copy on the host (input layer)
    # and loads another with the output layer, so the device holds every tensor's bytes.
    assert weights_all == header_bytes
    # Without the output layer, only the repeating layers move.
    assert layout.on_device(n)[0] == sum(layout.shape.layer_bytes)
    half_weights, half_kv = layout.on_device(15)
    assert half_kv * 2 == kv_all and half_weights == sum(layout.shape.layer_bytes[15:])
    host = layout.host_plan(15)
    assert host.kv_bytes + half_kv == kv_all and host.weights_bytes + half_weights == layout.shape.weights_bytes


def test_auto_uses_the_planner_and_the_device_memory(model_path: Path) -> None:
    layout = memplan.llama_layout(model_path, n_ctx=4096, parallel=4)
    assert resolve("auto", BuildDevices(True, (H100,)), layout, "m").n_gpu_layers == 31
    tight = GpuDevice("CUDA0", "small", "CUDA", DEVICE_MARGIN + sum(layout.layer_bytes()[-7:]))
    assert resolve("auto", BuildDevices(True, (tight,)), layout, "m").n_gpu_layers == 7
    assert resolve("auto", BuildDevices(False), layout, "m").n_gpu_layers == 0
    assert resolve(12, BuildDevices(True, (tight,)), layout, "m").n_gpu_layers == 12  # as configured


def test_an_offloaded_plan_that_cannot_fit_the_device_is_refused(model_path: Path) -> None:
    layout = memplan.llama_layout(model_path, n_ctx=4096, parallel=4)
    with pytest.raises(BackendStartupError, match=r"cannot fit in the device memory of CUDA0.*Lower n_gpu_layers"):
        memplan.guard_llama_cpp(
            "m", layout, n_gpu_layers=-1, device_free=10 * MiB, device_place="the device memory of CUDA0"
        )
    memplan.guard_llama_cpp(
        "m", layout, n_gpu_layers=-1, device_free=80 << 30, device_place="the device memory of CUDA0"
    )
