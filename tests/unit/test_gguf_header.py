"""The server's own GGUF header reader, field by field against gguf-py's ``GGUFReader`` on the real
default model (this test may import ``gguf``; the server must not, see test_server_libraries)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from backends.gguf_header import GGUFError, GGUFHeader, ValueType, read_header


@pytest.fixture(scope="module")
def header(model_path: Path) -> GGUFHeader:
    return read_header(model_path)


def test_metadata_matches_gguf_py(model_path: Path, header: GGUFHeader) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(str(model_path))
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}  # its own pseudo-fields
    assert header.version == reader.fields["GGUF.version"].contents()
    assert list(header.metadata) == list(fields)
    for key, field in fields.items():
        assert header.value_types[key] == ValueType(int(field.types[0])), key
        expected = field.contents()
        got = header.metadata[key]
        if isinstance(expected, list):
            assert list(got) == expected, key  # type: ignore[arg-type]
        elif isinstance(expected, float):
            assert got == pytest.approx(expected), key
        else:
            assert got == expected, key
    # Every value type this model uses, arrays of strings and of integers included.
    assert {ValueType.STRING, ValueType.UINT32, ValueType.FLOAT32, ValueType.BOOL, ValueType.ARRAY} <= set(
        header.value_types.values()
    )


def test_tensor_directory_matches_gguf_py(model_path: Path, header: GGUFHeader) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(str(model_path))
    assert header.data_offset == reader.data_offset
    assert len(header.tensors) == len(reader.tensors) == 272
    sizes = header.tensor_nbytes()
    for ours, theirs in zip(header.tensors, reader.tensors, strict=True):
        assert ours.name == theirs.name
        assert ours.shape == tuple(int(d) for d in theirs.shape)
        assert ours.ggml_type == int(theirs.tensor_type)
        assert header.data_offset + ours.offset == theirs.data_offset
        # From the offsets, padding included: never less than the tensor, at most one alignment more.
        assert theirs.n_bytes <= sizes[ours.name] < theirs.n_bytes + 32


def test_not_a_gguf_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_header(path)


def test_unknown_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 7, 0, 0) + bytes(32))
    with pytest.raises(GGUFError, match="version 7"):
        read_header(path)


def test_truncated_header_is_refused(model_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    with model_path.open("rb") as f:
        path.write_bytes(f.read(4096))  # inside the vocabulary array
    with pytest.raises(GGUFError, match=r"truncated|past the end"):
        read_header(path)


def test_big_endian_file_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "be.gguf"
    key = b"llama.block_count"
    name = b"blk.0.attn_norm.weight"
    body = struct.pack(">IQQ", 3, 1, 1) + struct.pack(">Q", len(key)) + key + struct.pack(">II", 4, 30)
    body += struct.pack(">Q", len(name)) + name + struct.pack(">IQIQ", 1, 576, 0, 0)
    path.write_bytes(b"GGUF" + body + bytes(64))
    header = read_header(path)
    assert header.metadata == {"llama.block_count": 30}
    assert header.tensors[0].shape == (576,) and header.data_offset % 32 == 0
