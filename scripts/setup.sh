#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned requirements into it. Safe to re-run.
# torch==2.13.0 is pinned: that version installs the CPU wheel; any other pulls CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "${1:-requirements-dev.txt}"
