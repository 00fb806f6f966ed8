"""Where quantserve keeps what it downloads or builds: one root for the models cache, the vLLM
fixtures, llm-compressor's venv and the llama.cpp tool builds."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$QUANTSERVE_CACHE``, else ``~/.cache/quantserve``: CI caches this one folder."""
    return Path(os.environ.get("QUANTSERVE_CACHE", Path.home() / ".cache" / "quantserve")).expanduser()
