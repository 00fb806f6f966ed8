"""De-quantize a GGUF to F16 with the ``gguf`` package, metadata preserved.

The default model ships only as Q4_1; an F16 copy of it is the high-precision source every
other GGUF level is quantized from (so the ladder measures quantization error relative to
what this model really is, not to weights nobody has here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

# Keys the writer sets itself (or that describe the old file) and must not be copied.
_SKIP_KEYS = ("GGUF.", "general.architecture", "general.file_type")
_F16_FILE_TYPE = 1  # LLAMA_FTYPE_MOSTLY_F16

Progress = Callable[[int, int], None]  # (done, total) tensors


def dequantize_gguf(src: Path, dst: Path, *, progress: Progress | None = None) -> Path:
    """Write ``dst``: every quantized tensor of ``src`` as F16 (F32 tensors stay F32), every
    metadata key copied, ``general.file_type`` set to F16. Written to ``dst.partial`` first."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, dequantize

    reader = GGUFReader(str(src))
    arch = str(reader.fields["general.architecture"].contents())
    tmp = dst.with_name(dst.name + ".partial")
    writer = GGUFWriter(str(tmp), arch)
    for key, f in reader.fields.items():
        if key.startswith(_SKIP_KEYS):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype is GGUFValueType.ARRAY else None
        writer.add_key_value(key, f.contents(), vtype, sub)
    writer.add_file_type(_F16_FILE_TYPE)
    total = len(reader.tensors)
    for i, t in enumerate(reader.tensors):
        if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            data = t.data
        else:
            # gguf returns rows x columns in numpy order (the reverse of GGUF's shape)
            data = dequantize(t.data, t.tensor_type).astype(np.float16)
        writer.add_tensor(t.name, data)
        if progress is not None:
            progress(i + 1, total)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(dst)
    logger.info("wrote %s (%d tensors, F16)", dst, total)
    return dst


def f16_source(models_dir: Path, quantized: Path) -> Path:
    """Where the F16 copy of ``quantized`` lives: ``NAME.F16.gguf`` beside the cache's models."""
    stem = quantized.name.removesuffix(".gguf")
    base = stem.rsplit(".", 1)[0] if "." in stem else stem
    return models_dir / f"{base}.F16.gguf"
