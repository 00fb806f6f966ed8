#!/usr/bin/env bash
# Install (if needed) and serve the embedded default model on http://127.0.0.1:8000/v1.
# Extra arguments go to `quantserve serve` (e.g. --port 8080 --api-key KEY --config FILE).
# On an NVIDIA GPU: QUANTSERVE_GPU=cuda bash scripts/serve.sh (builds llama.cpp for CUDA once;
# see docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/quantserve serve "$@"
