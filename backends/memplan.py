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
from backends.gguf_header import GGUFError, read_header

GiB = 1 << 30
MEMINFO = Path("/proc/meminfo")
HOST = "this machine's memory"

# Bytes per cached K or V value. q8_0 / q4_0 are ggml blocks of 32 values (34 / 18 bytes).
LLAMA_KV_BYTES: dict[str, float] = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
# vLLM's kv_cache_dtype: "auto" is the model dtype (bf16 / f16 here); every fp8 variant is 1 byte.
VLLM_KV_BYTES: dict[str, float] = {"auto": 2.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 1.0}
# Tensors of llama.cpp's input layer, which it keeps in host memory whatever n_gpu_layers says.
_INPUT_TENSORS = frozenset({"token_embd", "token_embd_norm", "position_embd", "token_types"})


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What the KV cache size depends on, per layer."""

    n_layer: int
    n_head_kv: tuple[int, ...]  # per layer (some GGUFs vary it; most repeat one value)
    head_dim_k: int
    head_dim_v: int
    n_ctx_train: int
    weights_bytes: int
    # GGUF only (empty / 0 for HF checkpoints): what moves to the device per offloaded layer.
    layer_bytes: tuple[int, ...] = ()
    output_bytes: int = 0

    def kv_bytes_per_token(self, k_bytes: float, v_bytes: float) -> float:
        return sum(self.kv_layer_bytes_per_token(k_bytes, v_bytes))

    def kv_layer_bytes_per_token(self, k_bytes: float, v_bytes: float) -> tuple[float, ...]:
        return tuple(h * (self.head_dim_k * k_bytes + self.head_dim_v * v_bytes) for h in self.n_head_kv)


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    weights_bytes: int
    kv_bytes: int
    tokens: int  # KV cells: n_ctx x parallel sequences
    kv_desc: str  # e.g. "k:f16,v:q8_0"
    available_bytes: int | None  # None: not known (not Linux, or a device that cannot say)
    place: str = HOST  # where these bytes live, for the error message

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
    """The model's shape from a GGUF file's header (``backends.gguf_header``: never the weights)."""
    try:
        header = read_header(path)
    except (OSError, GGUFError) as exc:
        raise ConfigError(f"cannot read the GGUF metadata of {path.name}: {exc}") from exc
    meta = header.metadata

    def number(key: str, default: int) -> int:
        value = meta.get(key, default)
        return int(value) if isinstance(value, int | float) else default

    arch = str(meta.get("general.architecture", "llama"))
    n_layer = number(f"{arch}.block_count", 0)
    n_head = number(f"{arch}.attention.head_count", 1)
    n_embd = number(f"{arch}.embedding_length", 0)
    head_kv = meta.get(f"{arch}.attention.head_count_kv", n_head)
    per_layer = tuple(int(h) for h in head_kv) if isinstance(head_kv, tuple) else (int(head_kv),) * n_layer
    head_dim = n_embd // max(n_head, 1)
    layers, output = _layer_bytes(header.tensor_nbytes(), n_layer)
    return ModelShape(
        n_layer=n_layer,
        n_head_kv=per_layer,
        head_dim_k=number(f"{arch}.attention.key_length", head_dim),
        head_dim_v=number(f"{arch}.attention.value_length", head_dim),
        n_ctx_train=number(f"{arch}.context_length", 0),
        weights_bytes=path.stat().st_size,
        layer_bytes=layers,
        output_bytes=output,
    )


def _layer_bytes(sizes: dict[str, int], n_layer: int) -> tuple[tuple[int, ...], int]:
    """Weight bytes of each repeating layer (``blk.N.*``) and of the output layer, as llama.cpp
    places them: the input embeddings always stay in host memory; the output layer (everything
    else) goes to the device when every layer does, with a copy of ``token_embd`` when the model
    ties its output to it (llama.cpp loads that tensor twice)."""
    layers = [0] * n_layer
    output = 0
    for name, size in sizes.items():
        head, _, rest = name.partition(".")
        if head == "blk":
            index = rest.partition(".")[0]
            if index.isdigit() and int(index) < n_layer:
                layers[int(index)] += size
                continue
        if head not in _INPUT_TENSORS:
            output += size
    if "output.weight" not in sizes:
        output += sizes.get("token_embd.weight", 0)
    return tuple(layers), output


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


@dataclass(frozen=True, slots=True)
class LlamaLayout:
    """Where llama.cpp puts one model's weights and KV cache, per layer, for one context size."""

    shape: ModelShape
    tokens: int  # KV cells: n_ctx x parallel sequences
    kv_layer_bytes: tuple[int, ...]  # KV cache of each layer for ``tokens``
    kv_desc: str

    @property
    def n_layer(self) -> int:
        return self.shape.n_layer

    def layer_bytes(self) -> tuple[int, ...]:
        """Weights + KV of each repeating layer: what one more offloaded layer moves to the device."""
        weights = self.shape.layer_bytes or (0,) * self.n_layer
        return tuple(w + kv for w, kv in zip(weights, self.kv_layer_bytes, strict=True))

    def on_device(self, n_gpu_layers: int) -> tuple[int, int]:
        """(weights, KV) bytes on the device. llama.cpp's rule: the LAST n layers are offloaded,
        the output layer too once n exceeds the layer count; -1 means everything."""
        n = self.n_layer + 1 if n_gpu_layers < 0 else min(n_gpu_layers, self.n_layer + 1)
        first = self.n_layer - min(n, self.n_layer)
        weights = sum((self.shape.layer_bytes or (0,) * self.n_layer)[first:])
        if n > self.n_layer:
            weights += self.shape.output_bytes
        return weights, sum(self.kv_layer_bytes[first:])

    def host_plan(self, n_gpu_layers: int = 0, available: int | None = None) -> MemoryPlan:
        """What stays in host memory (everything on a CPU build), against MemAvailable."""
        dev_weights, dev_kv = self.on_device(n_gpu_layers)
        return MemoryPlan(
            weights_bytes=self.shape.weights_bytes - dev_weights,
            kv_bytes=sum(self.kv_layer_bytes) - dev_kv,
            tokens=self.tokens,
            kv_desc=self.kv_desc,
            available_bytes=available if available is not None else available_memory(),
        )

    def device_plan(self, n_gpu_layers: int, available: int | None, place: str) -> MemoryPlan:
        """What the offloaded layers put in device memory, against the device's free memory."""
        weights, kv = self.on_device(n_gpu_layers)
        return MemoryPlan(weights, kv, self.tokens, self.kv_desc, available, place=place)


def llama_layout(
    path: Path, *, n_ctx: int, parallel: int, cache_type_k: str = "f16", cache_type_v: str = "f16"
) -> LlamaLayout:
    """llama.cpp holds ``parallel`` sequences of ``n_ctx`` tokens (0: the trained context) each."""
    shape = gguf_shape(path)
    for kv in (cache_type_k, cache_type_v):
        if kv not in LLAMA_KV_BYTES:
            raise ConfigError(f"unknown KV cache type {kv!r}; choose one of: {', '.join(LLAMA_KV_BYTES)}")
    tokens = (n_ctx or shape.n_ctx_train) * parallel
    per_token = shape.kv_layer_bytes_per_token(LLAMA_KV_BYTES[cache_type_k], LLAMA_KV_BYTES[cache_type_v])
    return LlamaLayout(shape, tokens, tuple(int(b * tokens) for b in per_token), f"k:{cache_type_k},v:{cache_type_v}")


def plan_llama_cpp(
    path: Path,
    *,
    n_ctx: int,
    parallel: int,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    available: int | None = None,
) -> MemoryPlan:
    """The whole model and KV cache in host memory (a CPU build; the sizing of ``quantserve inspect``)."""
    layout = llama_layout(path, n_ctx=n_ctx, parallel=parallel, cache_type_k=cache_type_k, cache_type_v=cache_type_v)
    return layout.host_plan(0, available)


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
        first = "Lower n_gpu_layers (auto offloads what fits), n_ctx" if plan.place != HOST else "Lower n_ctx"
        raise BackendStartupError(
            f"model {model_id!r} cannot fit in {plan.place}: {plan.describe()}. "
            f"{first} / parallel (max_model_len / kv_cache_memory_gib on vLLM), use a smaller KV cache type "
            "(q8_0 / q4_0; fp8 on vLLM) or a smaller quantization."
        )
    return plan


def guard_llama_cpp(
    model_id: str, layout: LlamaLayout, *, n_gpu_layers: int, device_free: int | None, device_place: str
) -> None:
    """The start-up check of the llama.cpp backend: what stays on the host against host memory,
    what is offloaded against the device's free memory; ``BackendStartupError`` when one cannot fit."""
    require_fit(model_id, layout.host_plan(n_gpu_layers))
    if n_gpu_layers:
        require_fit(model_id, layout.device_plan(n_gpu_layers, device_free, device_place))


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
