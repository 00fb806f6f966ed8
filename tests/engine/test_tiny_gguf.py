"""The benchmarks' GPU stand-in (``bench.tiny_gguf``): the default model's vocabulary on a tiny
random network. Its figures mean something only if everything per token is the default model's:
the same tokens for the same text, the same end tokens, 49,152-entry logits rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from backends.llama_cpp.native import ContextConfig, NativeModel

TEXT = "<|im_start|>user\nWrite a long story about a dragon. Ünïcödé, 12345!<|im_end|>\n"


def test_the_stand_in_tokenizes_like_the_default_model_and_decodes(model_path: Path, tmp_path: Path) -> None:
    # The command the docs give, in its own process: gguf-py stays out of this one, which loads
    # llama.cpp models (gguf-py's native imports once made llama.cpp's model load crash).
    tiny_path = tmp_path / "tiny.gguf"
    cmd = [sys.executable, "-m", "bench.tiny_gguf", "--src", str(model_path), "--out", str(tiny_path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120, cwd=Path(__file__).parents[2])
    assert tiny_path.stat().st_size < model_path.stat().st_size / 5
    cfg = ContextConfig(256, 2, 64, 1, 0, True, "f16", "f16")
    real, tiny = NativeModel(model_path, cfg), NativeModel(tiny_path, cfg)
    try:
        assert tiny.n_vocab == real.n_vocab == 49152
        tokens = real.tokenize(TEXT, add_special=False)
        assert tiny.tokenize(TEXT, add_special=False) == tokens
        assert tiny.eog_tokens().tolist() == real.eog_tokens().tolist()
        assert tiny.bos_eos() == real.bos_eos()
        for i, token in enumerate(tokens):
            tiny.put(i, token, i, 0, i == len(tokens) - 1)
        assert tiny.decode(len(tokens)) == 0
        row = tiny.output_logits(1)[0]
        assert row.shape == (49152,) and bool(np.isfinite(row).all()) and float(row.std()) > 0
    finally:
        tiny.close()
        real.close()
