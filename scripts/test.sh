#!/usr/bin/env bash
# Set everything up, then run the test suite (tier 1 and tier 2, a few minutes on 2 cores).
# Extra arguments go to pytest, e.g. scripts/test.sh -k model
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-dev.txt
.venv/bin/python -m pytest -q "$@"
