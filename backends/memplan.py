"""Memory planner: weights + KV cache for a context size, compared with the memory this host has.

Engine-neutral (no engine import): the model's shape comes from the GGUF metadata or the HF
``config.json``. The figures are lower bounds (compute buffers and the runtime itself come on
top), so a model is refused only when it certainly cannot fit; the point is a clear start-up
error with the numbers instead of the OOM killer halfway through loading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from backends.errors import BackendStartupError, ConfigError

GiB = 1 << 30
MEMINFO = Path("/proc/meminfo")

# Bytes per cached K or V value. q8_0 / q4_0 are ggml blocks of 32 values (34 / 18 bytes).
LLAMA_KV_BYTES: dict[str, float] = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
# vLLM's kv_cache_dtype: "auto" is the model dtype (bf16 / f16 here); every fp8 variant is 1 byte.
VLLM_KV_BYTES: dict[str, float] = {"auto": 2.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 1.0}


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What the KV cache size depends on, per layer."""

    n_layer: int
    n_head_kv: tuple[int, ...]  # per layer (some GGUFs vary it; most repeat one value)
    head_dim_k: int
    head_dim_v: int
    n_ctx_train: int
    weights_bytes: int

    def kv_bytes_per_token(self, k_bytes: float, v_bytes: float) -> float:
        return sum(h * (self.head_dim_k * k_bytes + self.head_dim_v * v_bytes) for h in self.n_head_kv)


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    weights_bytes: int
    kv_bytes: int
    tokens: int  # KV cells: n_ctx x parallel sequences
    kv_desc: str  # e.g. "k:f16,v:q8_0"
    available_bytes: int | None  # None: not known (not Linux) or not host memory

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes

    @property
    def fits(self) -> bool:
        return self.available_bytes is None or self.total_bytes <= self.available_bytes

    def describe(self) -> str:
        avail = "unknown" if self.available_bytes is None else gib(self.available_bytes)
        return (
            f"weights {gib(self.weights_bytes)} + KV cache {gib(self.kv_bytes)} "
            f"({self.tokens} tokens, {self.kv_desc}) = {gib(self.total_bytes)}; available {avail}"
        )


def gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def available_memory(meminfo: Path = MEMINFO) -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def gguf_shape(path: Path) -> ModelShape:
    """The model's shape from a GGUF file's metadata (reads the header only; weights stay mapped)."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(str(path)).fields
    except Exception as exc:  # a missing, truncated or foreign file fails in many different ways
        raise ConfigError(f"cannot read the GGUF metadata of {path.name}: {exc}") from exc

    def value(key: str, default: object = None) -> object:
        field = fields.get(key)
        return default if field is None else field.contents()

    arch = str(value("general.architecture", "llama"))
    n_layer = int(str(value(f"{arch}.block_count", 0)))
    n_head = int(str(value(f"{arch}.attention.head_count", 1)))
    n_embd = int(str(value(f"{arch}.embedding_length", 0)))
    head_kv = value(f"{arch}.attention.head_count_kv", n_head)
    per_layer = tuple(int(h) for h in head_kv) if isinstance(head_kv, list) else (int(str(head_kv)),) * n_layer
    head_dim = n_embd // max(n_head, 1)
    return ModelShape(
        n_layer=n_layer,
        n_head_kv=per_layer,
        head_dim_k=int(str(value(f"{arch}.attention.key_length", head_dim))),
        head_dim_v=int(str(value(f"{arch}.attention.value_length", head_dim))),
        n_ctx_train=int(str(value(f"{arch}.context_length", 0))),
        weights_bytes=path.stat().st_size,
    )


def hf_shape(model_dir: Path) -> ModelShape:
    """The model's shape from an HF checkpoint's ``config.json`` (weights: the safetensors files)."""
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {model_dir.name}/config.json: {exc}") from exc
    cfg = cfg.get("text_config", cfg)  # multimodal wrappers keep the language model's config inside
    n_layer = int(cfg["num_hidden_layers"])
    n_head = int(cfg["num_attention_heads"])
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // n_head)
    return ModelShape(
        n_layer=n_layer,
        n_head_kv=(int(cfg.get("num_key_value_heads") or n_head),) * n_layer,
        head_dim_k=head_dim,
        head_dim_v=head_dim,
        n_ctx_train=int(cfg.get("max_position_embeddings") or 0),
        weights_bytes=sum(p.stat().st_size for p in model_dir.glob("*.safetensors")),
    )


def plan_llama_cpp(
    path: Path,
    *,
    n_ctx: int,
    parallel: int,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    on_host: bool = True,
    available: int | None = None,
) -> MemoryPlan:
    """llama.cpp holds ``parallel`` sequences of ``n_ctx`` tokens (0: the trained context) each."""
    shape = gguf_shape(path)
    for kv in (cache_type_k, cache_type_v):
        if kv not in LLAMA_KV_BYTES:
            raise ConfigError(f"unknown KV cache type {kv!r}; choose one of: {', '.join(LLAMA_KV_BYTES)}")
    tokens = (n_ctx or shape.n_ctx_train) * parallel
    per_token = shape.kv_bytes_per_token(LLAMA_KV_BYTES[cache_type_k], LLAMA_KV_BYTES[cache_type_v])
    return MemoryPlan(
        weights_bytes=shape.weights_bytes,
        kv_bytes=int(per_token * tokens),
        tokens=tokens,
        kv_desc=f"k:{cache_type_k},v:{cache_type_v}",
        available_bytes=(available if available is not None else available_memory()) if on_host else None,
    )


def plan_vllm(
    model_dir: Path,
    *,
    max_model_len: int | None,
    max_num_seqs: int = 1,
    kv_cache_dtype: str = "auto",
    kv_pool_bytes: int | None = None,
    on_host: bool = True,
    available: int | None = None,
) -> MemoryPlan:
    """vLLM reserves a KV pool up front: ``kv_pool_bytes`` when set (vLLM-CPU), else enough for
    ``max_num_seqs`` sequences of ``max_model_len`` tokens in ``kv_cache_dtype``."""
    shape = hf_shape(model_dir)
    per_value = VLLM_KV_BYTES.get(kv_cache_dtype, 1.0 if kv_cache_dtype.startswith("fp8") else 2.0)
    tokens = (max_model_len or shape.n_ctx_train) * max_num_seqs
    needed = int(shape.kv_bytes_per_token(per_value, per_value) * tokens)
    return MemoryPlan(
        weights_bytes=shape.weights_bytes,
        kv_bytes=kv_pool_bytes if kv_pool_bytes is not None else needed,
        tokens=tokens,
        kv_desc=f"kv:{kv_cache_dtype}",
        available_bytes=(available if available is not None else available_memory()) if on_host else None,
    )


def require_fit(model_id: str, plan: MemoryPlan) -> MemoryPlan:
    """Raise ``BackendStartupError`` with the numbers when ``plan`` cannot fit; else return it."""
    if not plan.fits:
        raise BackendStartupError(
            f"model {model_id!r} cannot fit in this machine's memory: {plan.describe()}. "
            "Lower n_ctx / parallel (max_model_len / kv_cache_memory_gib on vLLM), use a smaller KV cache type "
            "(q8_0 / q4_0; fp8 on vLLM) or a smaller quantization."
        )
    return plan


def guard_llama_cpp(
    model_id: str, path: Path, *, n_ctx: int, parallel: int, cache_type_k: str, cache_type_v: str, on_host: bool
) -> MemoryPlan | None:
    """The start-up check of the llama.cpp backend. A file whose metadata cannot be read is left
    to llama.cpp, which reports it better; a plan that cannot fit raises ``BackendStartupError``."""
    try:
        plan = plan_llama_cpp(
            path, n_ctx=n_ctx, parallel=parallel, cache_type_k=cache_type_k, cache_type_v=cache_type_v, on_host=on_host
        )
    except (ConfigError, KeyError, ValueError, ImportError):
        return None
    return require_fit(model_id, plan)


def guard_vllm(
    model_id: str, model_dir: Path, *, max_model_len: int | None, kv_cache_dtype: str, kv_pool_gib: float, on_cpu: bool
) -> MemoryPlan | None:
    """The start-up check of the vLLM backend: on the CPU the weights and the fixed KV pool
    (``kv_cache_memory_gib``) live in host memory; on a GPU vLLM profiles its memory itself."""
    if not on_cpu:
        return None
    try:
        plan = plan_vllm(
            model_dir, max_model_len=max_model_len, kv_cache_dtype=kv_cache_dtype, kv_pool_bytes=int(kv_pool_gib * GiB)
        )
    except (ConfigError, KeyError, ValueError, ImportError):
        return None
    return require_fit(model_id, plan)
