"""The vLLM backend's options and their translation to ``AsyncEngineArgs``.

Parsing never imports vLLM (so a config is checked where vLLM is not installed); the values
that depend on the installed vLLM (``kv_cache_dtype``, engine arguments a release dropped)
are checked against it at start-up by ``engine_kwargs``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from backends.base import BackendOptions
from backends.errors import BackendStartupError

GiB = 1 << 30

# Our option -> the AsyncEngineArgs field it sets (same name unless noted).
_ENGINE_FIELDS: Mapping[str, str] = {
    "quantization": "quantization",
    "dtype": "dtype",
    "max_model_len": "max_model_len",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "kv_cache_dtype": "kv_cache_dtype",
    "calculate_kv_scales": "calculate_kv_scales",
    "enable_prefix_caching": "enable_prefix_caching",
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "max_num_queued_reqs": "max_num_queued_reqs",
    "enforce_eager": "enforce_eager",
    "tensor_parallel_size": "tensor_parallel_size",
    "pipeline_parallel_size": "pipeline_parallel_size",
    "distributed_executor_backend": "distributed_executor_backend",
    "seed": "seed",
}

# CPU-only knobs vLLM reads from the environment of the engine processes it spawns.
_CPU_ENV: Mapping[str, str] = {
    "cpu_omp_threads_bind": "VLLM_CPU_OMP_THREADS_BIND",
    "cpu_reserved_cores": "VLLM_CPU_NUM_OF_RESERVED_CPU",
}

DEFAULT_CPU_KV_CACHE_GIB = 1.0


class VllmOptions(BackendOptions):
    """Per-model options for ``backend: vllm`` (unknown keys are rejected)."""

    quantization: str | None = Field(
        default=None,
        description="None: read from the checkpoint's config (awq, gptq, compressed-tensors, fp8); or force one",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_model_len: int | None = Field(default=None, gt=0, description="None: the checkpoint's context length")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    kv_cache_dtype: str = Field(
        default="auto",
        min_length=1,
        description="auto, fp8, fp8_e4m3, fp8_e5m2, int8_per_token_head ...; checked against the installed vLLM",
    )
    calculate_kv_scales: bool = Field(
        default=False, description="compute FP8 KV scales at run time (only where the installed vLLM has this argument)"
    )
    enable_prefix_caching: bool | None = None
    max_num_seqs: int | None = Field(default=None, gt=0, description="most sequences batched at once")
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    max_num_queued_reqs: int | None = Field(
        default=None, gt=0, description="bound on running+waiting requests; beyond it a request gets Overloaded (429)"
    )
    enforce_eager: bool = False
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    distributed_executor_backend: Literal["mp", "ray"] | None = None
    seed: int | None = Field(default=None, description="engine seed (per-request seeds come from the request)")
    kv_cache_memory_gib: float | None = Field(
        default=None, gt=0, description=f"KV-cache size; on CPU defaults to {DEFAULT_CPU_KV_CACHE_GIB} GiB"
    )
    cpu_omp_threads_bind: str | None = Field(
        default=None, description="vLLM-CPU: cores for OpenMP, e.g. '0-7' or 'auto'"
    )
    cpu_reserved_cores: int | None = Field(
        default=None, ge=0, description="vLLM-CPU: cores kept free of OpenMP threads"
    )
    start_timeout_s: float = Field(default=900, gt=0, description="give up starting the engine after this long")


def accepted_kv_cache_dtypes() -> tuple[str, ...]:
    """The ``kv_cache_dtype`` values the installed vLLM accepts (imports vLLM)."""
    from typing import get_args

    from vllm.config.cache import CacheDType

    return tuple(str(v) for v in get_args(CacheDType))


def engine_kwargs(model_id: str, options: VllmOptions, *, on_cpu: bool, engine_fields: set[str]) -> dict[str, Any]:
    """``AsyncEngineArgs`` keyword arguments for ``options``; raise ``BackendStartupError`` for
    values the installed vLLM does not accept (named, with what it does accept)."""
    accepted = accepted_kv_cache_dtypes()
    if options.kv_cache_dtype not in accepted:
        raise BackendStartupError(
            f"model {model_id!r}: kv_cache_dtype {options.kv_cache_dtype!r} is not accepted by the installed vLLM; "
            f"choose one of: {', '.join(accepted)}",
            param="options.kv_cache_dtype",
        )
    defaults = VllmOptions()
    kwargs: dict[str, Any] = {}
    for name, field in _ENGINE_FIELDS.items():
        value = getattr(options, name)
        if value is None or value == getattr(defaults, name):  # our defaults are vLLM's defaults
            continue
        if field not in engine_fields:
            raise BackendStartupError(
                f"model {model_id!r}: option {name}={value!r} is not supported by the installed vLLM "
                f"(its engine has no {field!r} argument); remove it",
                param=f"options.{name}",
            )
        kwargs[field] = value
    if options.kv_cache_memory_gib is not None:
        kwargs["kv_cache_memory_bytes"] = int(options.kv_cache_memory_gib * GiB)
    elif on_cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        kwargs["kv_cache_memory_bytes"] = int(DEFAULT_CPU_KV_CACHE_GIB * GiB)
    return kwargs


def cpu_environment(options: VllmOptions) -> dict[str, str]:
    """Environment variables vLLM-CPU's engine processes read, from the options that are set."""
    env = {var: str(getattr(options, name)) for name, var in _CPU_ENV.items() if getattr(options, name) is not None}
    return env
