#!/usr/bin/env bash
# Samples N images from one run with a mix of samplers at a few model-call
# budgets and scores them with scripts/quality.py (independent digit
# classifier), for BENCHMARKS.md:
#   bash scripts/sampler-quality.sh RUN_DIR [N] [OUT_DIR]
# The several-run, every-budget version is scripts/recipe-table.sh, which
# this calls with its `demo` cases.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$1"
exec bash scripts/recipe-table.sh --n "${2:-1000}" --out "${3:-target/sampler-quality}" --cases demo "$RUN"
