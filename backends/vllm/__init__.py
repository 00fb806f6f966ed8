"""vLLM backend (AWQ, GPTQ, compressed-tensors, FP8, plain safetensors)."""
