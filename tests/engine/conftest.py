"""The real SmolLM2 vocabulary, for the grammar tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp as lc
import pytest


@pytest.fixture(scope="session")
def vocab(model_path: Path) -> Iterator[Any]:
    lc.llama_backend_init()
    params = lc.llama_model_default_params()
    params.vocab_only = True
    model = lc.llama_model_load_from_file(str(model_path).encode(), params)
    assert model
    try:
        yield lc.llama_model_get_vocab(model)
    finally:
        lc.llama_model_free(model)
