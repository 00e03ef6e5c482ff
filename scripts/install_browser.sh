#!/usr/bin/env bash
# Install the headless browser the notebook browser tests drive (tests/test_notebooks.py):
# Debian's Chromium at /usr/bin/chromium, which Playwright launches via executable_path (Playwright's
# own browser download is not used). Idempotent: does nothing when the browser is already there.
#
#   bash scripts/install_browser.sh        # as root (CI); otherwise prints the command to run
set -euo pipefail

BROWSER=/usr/bin/chromium

if [ -x "$BROWSER" ]; then
    echo "install_browser: $BROWSER already installed ($("$BROWSER" --version 2>/dev/null || echo 'version unknown')); nothing to do"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser: $BROWSER is missing and this is not root; run as root:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends chromium" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: $BROWSER is missing and apt-get is not available (Debian/Ubuntu only)" >&2
    exit 1
fi

echo "install_browser: $BROWSER is missing; installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "install_browser: installed $("$BROWSER" --version 2>/dev/null || echo "$BROWSER")"
