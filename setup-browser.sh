#!/usr/bin/env bash
# What the browser tests (tests/browser, `pytest -m browser`) need beyond setup.sh:  bash setup-browser.sh
# Playwright for Python in the venv, and Chromium from the system's packages (apt-get, as root; otherwise it prints
# the command to run and fails). Playwright drives that Chromium: its own browser downloads are not used.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
CHROMIUM=${CHROMIUM_PATH:-/usr/bin/chromium}  # the browser tests launch the same (tests/browser/lab_page.py)

"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-browser.txt
if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
    else
        echo "Chromium is missing at $CHROMIUM. Install it as root, then rerun this script:" >&2
        echo "    sudo apt-get update && sudo apt-get install -y chromium" >&2
        exit 1
    fi
fi
echo "Browser tests ready: $("$CHROMIUM" --version 2>/dev/null), playwright $("$VENV/bin/python" -c \
    'from importlib.metadata import version; print(version("playwright"))')"
