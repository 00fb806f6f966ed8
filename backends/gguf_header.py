"""A GGUF header reader: magic, version, every metadata key/value and the tensor directory.

Why not ``gguf.GGUFReader``: importing the ``gguf`` package runs its ``__init__``, which pulls
OpenCV, a second OpenMP runtime, OpenBLAS copies and ``huggingface_hub`` into the importing
process. In the server that was +100 MiB, +1 s and a llama.cpp model load that segfaulted next
to llama.cpp's own OpenMP. Why not llama.cpp: its metadata API needs the model loaded, and the
memory planner must answer *before* the load (that is the point of a start-up guard).

This reads the header only (format: llama.cpp's ``docs/gguf.md``), never the tensor data; the
file is memory-mapped so untouched pages (the weights) are never read from disk.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32  # used when general.alignment is absent

GGUFValue = int | float | bool | str | tuple[Any, ...]  # tuples hold values of one type


class GGUFError(ValueError):
    """The file is not a GGUF file this reader understands (the message says what is wrong)."""


class ValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# struct codes of the fixed-size types (byte order is prepended per file).
_SCALAR_CODES: dict[ValueType, str] = {
    ValueType.UINT8: "B",
    ValueType.INT8: "b",
    ValueType.UINT16: "H",
    ValueType.INT16: "h",
    ValueType.UINT32: "I",
    ValueType.INT32: "i",
    ValueType.FLOAT32: "f",
    ValueType.BOOL: "?",
    ValueType.UINT64: "Q",
    ValueType.INT64: "q",
    ValueType.FLOAT64: "d",
}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the contiguous (fastest-moving) dimension
    ggml_type: int  # a GGML_TYPE_* value (0 = F32, 1 = F16, 3 = Q4_1, ...)
    offset: int  # from the start of the tensor data section


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    version: int
    metadata: dict[str, GGUFValue]
    value_types: dict[str, ValueType]  # each key's type (an array's is ARRAY)
    tensors: tuple[TensorInfo, ...]
    data_offset: int  # where the tensor data starts in the file
    file_size: int

    def tensor_nbytes(self) -> dict[str, int]:
        """Bytes each tensor occupies in the file, from the offsets (alignment padding included:
        this knows no ggml type sizes, so it also holds for types newer than this reader)."""
        ordered = sorted(self.tensors, key=lambda t: t.offset)
        ends = [t.offset for t in ordered[1:]] + [self.file_size - self.data_offset]
        return {t.name: end - t.offset for t, end in zip(ordered, ends, strict=True)}


class _Cursor:
    """Sequential little- or big-endian reads over a buffer, with bounds checks."""

    def __init__(self, buf: memoryview, order: str) -> None:
        self.buf = buf
        self.pos = 0
        self.order = order

    def unpack(self, code: str, count: int = 1) -> tuple[Any, ...]:
        fmt = f"{self.order}{count}{code}"
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise GGUFError(f"the header is truncated at byte {self.pos}")
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return out

    def u32(self) -> int:
        return int(self.unpack("I")[0])

    def u64(self) -> int:
        return int(self.unpack("Q")[0])

    def string(self) -> str:
        n = self.u64()
        if self.pos + n > len(self.buf):
            raise GGUFError(f"a string of {n} bytes runs past the end of the file at byte {self.pos}")
        text = str(self.buf[self.pos : self.pos + n], "utf-8", "replace")
        self.pos += n
        return text

    def strings(self, count: int) -> tuple[str, ...]:
        """A string array: a vocabulary holds 10^5 of them, so this is the one hot loop (locals only)."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        length = struct.Struct(f"{self.order}Q").unpack_from
        out = []
        for _ in range(count):
            if pos + 8 > end:
                raise GGUFError(f"the header is truncated at byte {pos}")
            n = length(buf, pos)[0]
            pos += 8
            if pos + n > end:
                raise GGUFError(f"a string of {n} bytes runs past the end of the file at byte {pos}")
            out.append(str(buf[pos : pos + n], "utf-8", "replace"))
            pos += n
        self.pos = pos
        return tuple(out)

    def value_type(self) -> ValueType:
        raw = self.u32()
        try:
            return ValueType(raw)
        except ValueError:
            raise GGUFError(f"unknown GGUF value type {raw} at byte {self.pos - 4}") from None

    def value(self, vtype: ValueType) -> GGUFValue:
        if vtype is ValueType.STRING:
            return self.string()
        if vtype is ValueType.ARRAY:
            item_type = self.value_type()
            count = self.u64()
            if item_type in _SCALAR_CODES:  # one struct call for the whole array
                return self.unpack(_SCALAR_CODES[item_type], count)
            if item_type is ValueType.STRING:
                return self.strings(count)
            return tuple(self.value(item_type) for _ in range(count))
        scalar: GGUFValue = self.unpack(_SCALAR_CODES[vtype])[0]
        return scalar


def read_header(path: Path) -> GGUFHeader:
    """Parse ``path``'s GGUF header; ``GGUFError`` (a ``ValueError``) when it is not one, ``OSError``
    when it cannot be opened."""
    with path.open("rb") as f:
        return _parse(f, path.name)


def _parse(f: BinaryIO, name: str) -> GGUFHeader:
    size = f.seek(0, 2)
    if size < 24:
        raise GGUFError(f"{name} is too small to be a GGUF file ({size} bytes)")
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            return _parse_view(view, size, name)
        finally:
            view.release()


def _parse_view(view: memoryview, size: int, name: str) -> GGUFHeader:
    if bytes(view[:4]) != MAGIC:
        raise GGUFError(f"{name} is not a GGUF file (magic {bytes(view[:4])!r})")
    # The version is a small number: read little-endian, a big-endian file shows it byte-swapped.
    version = struct.unpack_from("<I", view, 4)[0]
    order = "<"
    if version & 0xFFFF == 0:
        order, version = ">", struct.unpack_from(">I", view, 4)[0]
    if version not in (2, 3):
        raise GGUFError(f"{name}: GGUF version {version} is not supported (2 and 3 are)")
    cur = _Cursor(view, order)
    cur.pos = 8
    n_tensors, n_kv = cur.u64(), cur.u64()
    metadata: dict[str, GGUFValue] = {}
    types: dict[str, ValueType] = {}
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.value_type()
        types[key] = vtype
        metadata[key] = cur.value(vtype)
    tensors = []
    for _ in range(n_tensors):
        tname = cur.string()
        n_dims = cur.u32()
        shape = tuple(int(d) for d in cur.unpack("Q", n_dims))
        ggml_type, offset = cur.u32(), cur.u64()
        tensors.append(TensorInfo(tname, shape, ggml_type, offset))
    align = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0:
        raise GGUFError(f"{name}: general.alignment {align!r} is not a positive integer")
    data_offset = -(-cur.pos // align) * align
    return GGUFHeader(version, metadata, types, tuple(tensors), data_offset, size)
