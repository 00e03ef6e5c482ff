#!/usr/bin/env bash
# Set everything up (venv, pinned packages, Debian's chromium), then run the test suite
# (tier 1, tier 2 and the browser tests: 18 min on 2 idle cores, 2026-12-02; ~39 min one at a time).
# The tests run in one pytest-xdist worker per core (PYTEST_WORKERS=N sets another count; 0 runs
# them in this process). Extra arguments go to pytest, e.g. scripts/test.sh -k model
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-dev.txt
# Debian's chromium for the notebook browser tests (apt-get, as root). CI must have it; elsewhere
# the browser tests are skipped with a reason if it cannot be installed.
if [ "${CI:-}" = "true" ]; then
    bash scripts/install_browser.sh
else
    bash scripts/install_browser.sh || echo "warning: no chromium; the browser tests will be skipped"
fi
.venv/bin/python -m pytest -q -n "${PYTEST_WORKERS:-$(nproc)}" "$@"
