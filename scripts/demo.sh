#!/usr/bin/env bash
# Set up, fetch MovieLens 100K and run round 0 plus three self-improvement rounds.
# Extra arguments go to `rsir run`, e.g. scripts/demo.sh --rounds 1 --seed 1
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
.venv/bin/rsir data fetch ml-100k
.venv/bin/rsir run --dataset ml-100k --rounds 3 --no-progress "$@"
