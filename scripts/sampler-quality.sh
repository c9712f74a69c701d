#!/usr/bin/env bash
# Samples N images from a run with each sampler at a few model-call budgets
# and scores them with scripts/quality.py (independent digit classifier),
# for BENCHMARKS.md.
#   bash scripts/sampler-quality.sh RUN_DIR [N] [OUT_DIR]
# Needs a built diffuse ($DIFFUSE, default target/release/diffuse) and a
# Python with torch and numpy ($TORCH_PYTHON, or a .venv created here:
# python3 -m venv .venv && .venv/bin/pip install torch numpy).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$1"
N="${2:-1000}"
OUT="${3:-target/sampler-quality}"
BIN="${DIFFUSE:-target/release/diffuse}"
PY="${TORCH_PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ ! -x .venv/bin/python ]]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet torch numpy
    fi
    PY=.venv/bin/python
fi
mkdir -p "$OUT"
# name | sampler flags (model calls in the name)
CASES=(
    "ddim-50|--sampler ddim --steps 50"
    "ddim-20|--sampler ddim --steps 20"
    "ddim-10|--sampler ddim --steps 10"
    "dpm++2m-karras-10|--sampler dpm++2m --steps 10 --spacing karras"
    "dpm++2m-karras-20|--sampler dpm++2m --steps 20 --spacing karras"
    "dpm++2m-logsnr-10|--sampler dpm++2m --steps 10 --spacing logsnr"
    "dpm++2m-sde-karras-20|--sampler dpm++2m-sde --steps 20 --spacing karras"
    "heun-karras-9|--sampler heun --steps 5 --spacing karras"
    "heun-karras-19|--sampler heun --steps 10 --spacing karras"
)
files=()
for c in "${CASES[@]}"; do
    name="${c%%|*}"
    flags="${c#*|}"
    start=$(date +%s)
    # shellcheck disable=SC2086
    "$BIN" sample --checkpoint "$RUN" --n "$N" --seed 0 $flags --out "$OUT/$name.png" --npy "$OUT/$name.npy" >/dev/null
    echo "$name: $(($(date +%s) - start)) s"
    files+=("$OUT/$name.npy")
done
"$PY" scripts/quality.py "${files[@]}" --json "$OUT/quality.json"
