"""The tensor types a size-budgeted mix may give each weight matrix, with ggml's exact storage
sizes (so a mix's file size is known before llama.cpp writes it), and the budget a user gives.

The sizes are ggml's block layouts (``ggml/src/ggml-common.h``): a row of ``width`` weights is
``width / block`` blocks of ``block_bytes`` each, and a row whose width is not a multiple of the
block cannot hold the type at all (llama.cpp would silently fall back to another type, which is
why SmolLM2's 576-wide rows never get a K-quant)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from toolkit.quantize_gguf import QuantizeError


class MixError(QuantizeError):
    """A size-budgeted mix could not be searched or written; the message says why."""


class BudgetError(MixError):
    """The budget cannot be met (below the smallest possible mix) or is not a size."""


@dataclass(frozen=True, slots=True)
class TensorType:
    name: str  # ggml's name, as llama-quantize --tensor-type takes it
    ggml_id: int  # GGML_TYPE_* value
    block: int  # weights per block: a row's width must be a multiple of it
    block_bytes: int
    ftype: int  # the LLAMA_FTYPE_MOSTLY_* a file mostly of this type is labelled with
    needs_imatrix: bool = False  # llama.cpp refuses to write it without an importance matrix

    def fits(self, width: int) -> bool:
        return width % self.block == 0

    def nbytes(self, shape: Sequence[int]) -> int:
        """Bytes of a tensor of ggml ``shape`` (``shape[0]`` is the row width)."""
        if not self.fits(shape[0]):
            raise MixError(f"a row of {shape[0]} weights cannot hold {self.name} ({self.block}-weight blocks)")
        return shape[0] // self.block * self.block_bytes * math.prod(shape[1:])


# name, GGML_TYPE_*, weights per block, bytes per block, LLAMA_FTYPE_MOSTLY_* (ggml.h, llama.h)
_ALL = (
    TensorType("F32", 0, 1, 4, 0),
    TensorType("F16", 1, 1, 2, 1),
    TensorType("BF16", 30, 1, 2, 32),
    TensorType("Q8_0", 8, 32, 34, 7),
    TensorType("Q6_K", 14, 256, 210, 18),
    TensorType("Q5_1", 7, 32, 24, 9),
    TensorType("Q5_K", 13, 256, 176, 16),
    TensorType("Q5_0", 6, 32, 22, 8),
    TensorType("Q4_1", 3, 32, 20, 3),
    TensorType("Q4_K", 12, 256, 144, 14),
    TensorType("IQ4_NL", 20, 32, 18, 25),
    TensorType("Q4_0", 2, 32, 18, 2),
    TensorType("IQ4_XS", 23, 256, 136, 30),
    TensorType("Q3_K", 11, 256, 110, 11),
    TensorType("IQ3_S", 21, 256, 110, 26),
    TensorType("IQ3_XXS", 18, 256, 98, 23, needs_imatrix=True),
    TensorType("Q2_K", 10, 256, 84, 10),
    TensorType("IQ2_S", 22, 256, 82, 28, needs_imatrix=True),
    TensorType("IQ2_XS", 17, 256, 74, 20, needs_imatrix=True),
    TensorType("IQ2_XXS", 16, 256, 66, 19, needs_imatrix=True),
    TensorType("IQ1_M", 29, 256, 56, 31, needs_imatrix=True),
    TensorType("IQ1_S", 19, 256, 50, 24, needs_imatrix=True),
)
TYPES: dict[str, TensorType] = {t.name: t for t in _ALL}
BY_ID: dict[int, TensorType] = {t.ggml_id: t for t in _ALL}
UNQUANTIZED = ("F32", "F16", "BF16")

# Every quantized type llama.cpp can write for a dense model's weights. Left out: TQ1_0/TQ2_0
# (ternary models only), MXFP4/NVFP4 (for weights trained in those formats) and Q1_0/Q2_0 (too new
# for the gguf package this toolkit reads with). The imatrix-only types join when there is one.
QUANT_TYPES: tuple[str, ...] = tuple(t.name for t in _ALL if t.name not in UNQUANTIZED)


def candidate_types(names: Sequence[str] | None, *, imatrix: bool) -> tuple[str, ...]:
    """The quantized types to try, checked: ``None`` means all that need no imatrix, or all."""
    chosen = [n.strip().upper() for n in names] if names is not None else list(QUANT_TYPES)
    unknown = [n for n in chosen if n not in TYPES or n in UNQUANTIZED]
    if unknown:
        raise MixError(f"unknown candidate type(s) {', '.join(unknown)}; choose from {', '.join(QUANT_TYPES)}")
    if imatrix:
        return tuple(chosen)
    needing = [n for n in chosen if TYPES[n].needs_imatrix]
    if names is not None and needing:
        raise MixError(f"{', '.join(needing)} need an importance matrix (--imatrix or --imatrix-text)")
    return tuple(n for n in chosen if not TYPES[n].needs_imatrix)


_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "KIB": 2**10, "MB": 10**6, "MIB": 2**20, "GB": 10**9, "GIB": 2**30}


def parse_size(text: str) -> int:
    """``"100MiB"`` -> 104857600 bytes (B, KB/KiB, MB/MiB, GB/GiB; a bare number is bytes)."""
    match = _SIZE.match(text)
    if match is None:
        raise BudgetError(f"size {text!r} is not a size like 100MiB, 95MB or 1.5GiB")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])


def padded(nbytes: int, alignment: int) -> int:
    return -(-nbytes // alignment) * alignment
