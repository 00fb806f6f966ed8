"""GGUF quantization through llama.cpp's own ``llama_model_quantize`` (llama-cpp-python), with an
optional importance matrix (as computed by llama.cpp's ``llama-imatrix``, see ``llama_tools``)."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# The levels this toolkit offers, highest precision first, with llama.cpp's ftype names.
GGUF_TYPES: tuple[str, ...] = ("Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_0", "Q3_K_M", "Q2_K")


class QuantizeError(RuntimeError):
    """llama.cpp refused or failed; the message says which file and type."""


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    path: Path
    qtype: str
    seconds: float
    imatrix: Path | None


def quantized_path(src: Path, qtype: str, out_dir: Path | None = None, *, imatrix: bool = False) -> Path:
    """``NAME.F16.gguf`` -> ``NAME.Q4_K_M.gguf`` (``NAME.Q4_K_M-imat.gguf`` with an imatrix)."""
    stem = src.name.removesuffix(".gguf")
    base = stem.rsplit(".", 1)[0] if "." in stem else stem
    return (out_dir or src.parent) / f"{base}.{qtype}{'-imat' if imatrix else ''}.gguf"


def quantize_gguf(
    src: Path, dst: Path, qtype: str, *, imatrix: Path | None = None, threads: int | None = None
) -> QuantizeResult:
    """Quantize ``src`` (F16/BF16/F32, or Q8_0 with requantization) to ``qtype`` at ``dst``."""
    import llama_cpp

    qtype = qtype.upper()
    if qtype not in GGUF_TYPES:
        raise QuantizeError(f"unknown GGUF type {qtype!r}; choose one of: {', '.join(GGUF_TYPES)}")
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    seconds = _quantize(src, dst, qtype, ftype, imatrix=imatrix, threads=threads)
    return QuantizeResult(dst, qtype, seconds, imatrix)


def quantize_tensors(
    src: Path,
    dst: Path,
    types: Mapping[str, int],
    *,
    file_type: int,
    imatrix: Path | None = None,
    threads: int | None = None,
) -> QuantizeResult:
    """Quantize ``src`` giving each named tensor its ggml type (``types``: tensor name -> GGML_TYPE_*
    value), as ``llama-quantize --tensor-type`` does with one anchored pattern per name. Name every
    weight: an unnamed one gets the Q8_0 recipe's type. ``general.file_type`` is set to
    ``file_type`` (a LLAMA_FTYPE_* value naming the mix's main type)."""
    import llama_cpp

    # Q8_0 only carries the overrides: llama.cpp applies them when the file type is a quantized one.
    seconds = _quantize(
        src,
        dst,
        "per-tensor types",
        llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        imatrix=imatrix,
        threads=threads,
        tensor_types=types,
        file_type=file_type,
        quiet=True,
    )
    return QuantizeResult(dst, "per-tensor types", seconds, imatrix)


def _quantize(
    src: Path,
    dst: Path,
    what: str,
    ftype: int,
    *,
    imatrix: Path | None,
    threads: int | None,
    tensor_types: Mapping[str, int] | None = None,
    file_type: int | None = None,
    quiet: bool = False,
) -> float:
    import llama_cpp

    if not src.is_file():
        raise QuantizeError(f"source {src} does not exist")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    params.allow_requantize = True  # a Q8_0 source is a legitimate (if lossier) starting point
    keep_alive: list[object] = []  # ctypes keeps only pointers: these must outlive the call
    if imatrix is not None:
        entries = load_imatrix(imatrix)
        array = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
        for i, (name, values) in enumerate(entries.items()):
            buf = (ctypes.c_float * len(values))(*values)
            encoded = name.encode()
            keep_alive += [buf, encoded]
            array[i].name = encoded
            array[i].data = ctypes.cast(buf, ctypes.POINTER(ctypes.c_float))
            array[i].size = len(values)
        params.imatrix = ctypes.cast(array, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep_alive.append(array)
    if tensor_types is not None:
        overrides = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
        for i, (name, ggml_type) in enumerate(tensor_types.items()):
            pattern = f"^{re.escape(name)}$".encode()  # std::regex (ECMAScript) reads Python's escapes
            keep_alive.append(pattern)
            overrides[i].pattern = pattern
            overrides[i].type = ggml_type
        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
        keep_alive.append(overrides)
    if file_type is not None:
        kv = (llama_cpp.llama_model_kv_override * 2)()
        kv[0].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
        kv[0].key = b"general.file_type"
        kv[0].value.val_i64 = file_type  # type: ignore[union-attr]  # the bindings type the union loosely
        params.kv_overrides = ctypes.cast(kv, ctypes.POINTER(llama_cpp.llama_model_kv_override))
        keep_alive.append(kv)
    tmp = dst.with_name(dst.name + ".partial")
    started = time.monotonic()
    kept: AbstractContextManager[list[str]] = _engine_log_kept() if quiet else nullcontext([])
    with kept as lines:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        tmp.unlink(missing_ok=True)
        said = [line.strip() for line in lines if "error" in line.lower()][-3:]
        raise QuantizeError(
            f"llama.cpp could not quantize {src.name} to {what} (return code {rc})" + "".join(f"\n  {x}" for x in said)
        )
    tmp.replace(dst)
    seconds = time.monotonic() - started
    logger.info("wrote %s (%s) in %.1f s", dst, what, seconds)
    return seconds


@contextmanager
def _engine_log_kept() -> Iterator[list[str]]:
    """llama.cpp's log lines, collected instead of printed (for an error message). A size search
    writes dozens of files at 272 lines and an override warning per tensor each, which would bury
    its progress bars; llama-cpp-python's level filter cannot quiet them (this ggml's log levels
    are shifted by one from the ones it maps)."""
    import llama_cpp

    lines: list[str] = []

    def collect(_level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
        lines.append((text or b"").decode("utf-8", "replace"))

    callback = llama_cpp.llama_log_callback(collect)
    previous, user_data = llama_cpp.llama_log_callback(), ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(previous), ctypes.byref(user_data))
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(previous, user_data)


def load_imatrix(path: Path) -> dict[str, list[float]]:
    """A GGUF imatrix (``NAME.in_sum2`` / ``NAME.counts`` tensors) as llama-quantize reads it:
    the mean squared activation of every input column, per expert."""
    import numpy as np
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    tensors = {t.name: np.asarray(t.data, dtype=np.float32).reshape(-1) for t in reader.tensors}
    out: dict[str, list[float]] = {}
    for key, sums in tensors.items():
        if not key.endswith(".in_sum2"):
            continue
        name = key.removesuffix(".in_sum2")
        counts = tensors.get(f"{name}.counts")
        if counts is None or counts.size == 0:
            raise QuantizeError(f"imatrix {path.name}: {name} has sums but no counts")
        per_expert = sums.reshape(counts.size, -1)
        safe = np.where(counts > 0, counts, 1.0)[:, None]
        means = np.where(counts[:, None] > 0, per_expert / safe, 1.0)
        out[name] = means.reshape(-1).astype(np.float32).tolist()
    if not out:
        raise QuantizeError(f"{path.name} holds no importance-matrix entries")
    return out
