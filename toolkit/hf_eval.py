"""HF / compressed-tensors checkpoints scored with transformers, for the quality columns.

Compressed-tensors weights are decompressed to dense bf16 (the values are exactly the quantized
ones), and compressed-tensors keeps each layer's scheme, so INT8 activations of a W8A8 checkpoint
are fake-quantized per token as the real kernels quantize them. This runs on any CPU, also where
vLLM has no kernel for the format; speed is measured separately, on the engine that serves it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


class HfScorer:
    def __init__(self, model_dir: Path, *, threads: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        if threads:
            torch.set_num_threads(threads)
        kwargs: dict[str, Any] = {}
        config = json.loads((model_dir / "config.json").read_text())
        if (config.get("quantization_config") or {}).get("quant_method") == "compressed-tensors":
            from transformers import CompressedTensorsConfig

            kwargs["quantization_config"] = CompressedTensorsConfig(run_compressed=False)
        self._torch = torch
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, **kwargs)
        self.model = model.eval()  # type: ignore[no-untyped-call]
        self.n_vocab = int(self.model.config.vocab_size)

    def __call__(self, window: list[int]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(torch.tensor([window])).logits[0]
        return np.asarray(logits.float().numpy())

    def close(self) -> None:
        del self.model
