"""Write a GGUF whose tensors come from several GGUF files of the same model: the sensitivity
pass's variants (the F16 model with one tensor group swapped for its bytes in another type).

Only bytes are moved. Each swapped tensor's data is exactly what llama.cpp's quantizer wrote for
it in a whole-model file of that type, so a variant holds what ``llama_model_quantize`` with the
same per-tensor overrides would write, in a fraction of a second instead of a quantizer run. The
metadata section is copied verbatim; only the tensor directory is re-encoded."""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from backends.gguf_header import read_header
from toolkit.mix_types import BY_ID, MixError, padded

# Bytes of each fixed-size GGUF metadata value type (8 = string and 9 = array are walked).
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    start: int  # absolute offset of its data in the file
    nbytes: int  # without the alignment padding


@dataclass(frozen=True, slots=True)
class Layout:
    path: Path
    kv_end: int  # bytes [0, kv_end) are the magic, version, counts and every metadata pair
    alignment: int
    data_offset: int
    tensors: dict[str, Tensor]  # in file order

    @property
    def n_weights(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors.values())

    @property
    def type_names(self) -> dict[str, str]:
        return {n: BY_ID[t.ggml_type].name for n, t in self.tensors.items()}


def read_layout(path: Path) -> Layout:
    header = read_header(path)
    alignment = header.metadata.get("general.alignment", 32)
    if not isinstance(alignment, int):
        raise MixError(f"{path.name}: general.alignment is not an integer")
    tensors: dict[str, Tensor] = {}
    for t in header.tensors:
        kind = BY_ID.get(t.ggml_type)
        if kind is None:
            raise MixError(f"{path.name}: tensor {t.name} has ggml type {t.ggml_type}, unknown to the mix search")
        tensors[t.name] = Tensor(t.name, t.shape, t.ggml_type, header.data_offset + t.offset, kind.nbytes(t.shape))
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        kv_end = _kv_end(buf, len(header.metadata))
    return Layout(path, kv_end, alignment, header.data_offset, tensors)


def _kv_end(buf: mmap.mmap, n_kv: int) -> int:
    """Where the metadata pairs end (little-endian GGUF v2/v3: llama.cpp writes no other)."""
    u32, u64 = struct.Struct("<I").unpack_from, struct.Struct("<Q").unpack_from
    pos = 24  # magic, version, tensor count, key/value count
    for _ in range(n_kv):
        pos += 8 + u64(buf, pos)[0]  # the key
        vtype = u32(buf, pos)[0]
        pos += 4
        count = 1
        if vtype == 9:
            vtype, count = u32(buf, pos)[0], u64(buf, pos + 4)[0]
            pos += 12
        if vtype == 8:
            for _ in range(count):
                pos += 8 + u64(buf, pos)[0]
        elif vtype in _FIXED:
            pos += _FIXED[vtype] * count
        else:
            raise MixError(f"unsupported GGUF value type {vtype} at byte {pos}")
    return int(pos)


def _tensor_info(t: Tensor, offset: int) -> bytes:
    name = t.name.encode()
    dims = struct.pack(f"<I{len(t.shape)}Q", len(t.shape), *t.shape)
    return struct.pack("<Q", len(name)) + name + dims + struct.pack("<IQ", t.ggml_type, offset)


def splice(base: Layout, swaps: Mapping[str, Layout], dst: Path) -> int:
    """Write ``dst``: ``base`` with each tensor named in ``swaps`` taken from that layout's file.
    Returns the file size."""
    chosen = [swaps.get(name, base).tensors[name] for name in base.tensors]
    infos, offset = [], 0
    for t in chosen:
        infos.append(_tensor_info(t, offset))
        offset += padded(t.nbytes, base.alignment)
    with ExitStack() as stack:
        maps: dict[Path, mmap.mmap] = {}
        for p in {base.path, *(layout.path for layout in swaps.values())}:
            f = stack.enter_context(p.open("rb"))
            maps[p] = stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        out = stack.enter_context(dst.open("wb"))
        out.write(maps[base.path][: base.kv_end])
        out.write(b"".join(infos))
        out.write(b"\0" * (padded(out.tell(), base.alignment) - out.tell()))
        for name, t in zip(base.tensors, chosen, strict=True):
            with memoryview(maps[swaps.get(name, base).path]) as view:
                out.write(view[t.start : t.start + t.nbytes])
            out.write(b"\0" * (padded(t.nbytes, base.alignment) - t.nbytes))
        return out.tell()
