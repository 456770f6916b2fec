#!/usr/bin/env bash
# Create .venv and install the project with its service and test extras.
# torch is pinned to 2.13.0 in pyproject.toml. On the project's CPU machines pip
# takes that build from the local wheel cache instead of downloading a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/python -c "import torch; print(f'rsir set up: torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}')"
