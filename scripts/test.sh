#!/usr/bin/env bash
# Set up and run the whole test suite. Needs a Redis server at 127.0.0.1:6379
# (tests use databases 13 to 15 and flush only those).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
