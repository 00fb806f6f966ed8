"""Quantization toolkit: inspect, quantize (GGUF K-quants, GPTQ, AWQ, W8A8) and measure quality.

Engine work goes through the same engines that serve the models (llama.cpp for GGUF, vLLM for
compressed-tensors checkpoints); ``toolkit`` may import ``backends`` but never ``server``.
"""
