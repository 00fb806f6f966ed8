#!/usr/bin/env bash
# Install (if needed) and run the checks: ruff, mypy, then the whole pytest suite.
# Extra arguments go to pytest (e.g. tests/unit -k registry).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
.venv/bin/quantserve models prepare
.venv/bin/ruff check server backends tests bench
.venv/bin/ruff format --check server backends tests bench
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
