#!/usr/bin/env bash
# Issue 20's table: samples N images from each trained run with each sampler
# at 10, 20 and 50 model calls, scores them with scripts/quality.py (the
# independent digit classifier: feature FID, confidence, class balance, with
# the real-vs-real floor and pure noise beside them) and prints one markdown
# table, recipes as rows, sampler x model calls as columns.
#
#   bash scripts/recipe-table.sh [--n N] [--out DIR] [--cases full|quick|bars|demo] LABEL=RUN_DIR...
#
#   --cases full   DDIM, DPM-Solver++(2M), DPM-Solver++(2M) SDE (Karras spacing)
#                  at 10, 20, 50 calls and Heun (Karras) at 9, 19, 49 (default)
#   --cases quick  DDIM-50 (the old default) and each sampler at ~20 calls
#   --cases bars   what issue 20's bars need: DDIM-50 (the old default) and
#                  DPM-Solver++(2M) and its SDE variant at 20 calls
#   --cases demo   the sampler mix of scripts/sampler-quality.sh
#
# Samples are seeded (--seed 0), so a rerun reproduces every figure; a case
# whose .npy exists already is not sampled again. Needs a built diffuse
# ($DIFFUSE, default target/release/diffuse) and a Python with torch and
# numpy ($TORCH_PYTHON, or a .venv made here).
set -euo pipefail
cd "$(dirname "$0")/.."
N=1000
OUT=target/recipe-table
SET=full
RUNS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --n) N="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --cases) SET="$2"; shift 2 ;;
        -*) echo "recipe-table: unknown option $1" >&2; exit 2 ;;
        *) RUNS+=("$1"); shift ;;
    esac
done
if [[ ${#RUNS[@]} -eq 0 ]]; then
    echo "usage: bash scripts/recipe-table.sh [--n N] [--out DIR] [--cases full|quick|bars|demo] LABEL=RUN_DIR..." >&2
    exit 2
fi
BIN="${DIFFUSE:-target/release/diffuse}"
PY="${TORCH_PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ ! -x .venv/bin/python ]]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet torch numpy
    fi
    PY=.venv/bin/python
fi
# case name (sampler, then model calls) | sampler flags
case "$SET" in
    full) CASES=(
        "ddim-10|--sampler ddim --steps 10" "ddim-20|--sampler ddim --steps 20" "ddim-50|--sampler ddim --steps 50"
        "dpm++2m-10|--sampler dpm++2m --steps 10 --spacing karras"
        "dpm++2m-20|--sampler dpm++2m --steps 20 --spacing karras"
        "dpm++2m-50|--sampler dpm++2m --steps 50 --spacing karras"
        "dpm++2m-sde-10|--sampler dpm++2m-sde --steps 10 --spacing karras"
        "dpm++2m-sde-20|--sampler dpm++2m-sde --steps 20 --spacing karras"
        "dpm++2m-sde-50|--sampler dpm++2m-sde --steps 50 --spacing karras"
        "heun-9|--sampler heun --steps 5 --spacing karras" "heun-19|--sampler heun --steps 10 --spacing karras"
        "heun-49|--sampler heun --steps 25 --spacing karras") ;;
    quick) CASES=(
        "ddim-50|--sampler ddim --steps 50" "ddim-20|--sampler ddim --steps 20"
        "dpm++2m-20|--sampler dpm++2m --steps 20 --spacing karras"
        "dpm++2m-sde-20|--sampler dpm++2m-sde --steps 20 --spacing karras"
        "heun-19|--sampler heun --steps 10 --spacing karras") ;;
    bars) CASES=(
        "ddim-50|--sampler ddim --steps 50"
        "dpm++2m-sde-20|--sampler dpm++2m-sde --steps 20 --spacing karras"
        "dpm++2m-20|--sampler dpm++2m --steps 20 --spacing karras") ;;
    demo) CASES=(
        "ddim-50|--sampler ddim --steps 50" "ddim-20|--sampler ddim --steps 20" "ddim-10|--sampler ddim --steps 10"
        "dpm++2m-karras-10|--sampler dpm++2m --steps 10 --spacing karras"
        "dpm++2m-karras-20|--sampler dpm++2m --steps 20 --spacing karras"
        "dpm++2m-logsnr-10|--sampler dpm++2m --steps 10 --spacing logsnr"
        "dpm++2m-sde-karras-20|--sampler dpm++2m-sde --steps 20 --spacing karras"
        "heun-karras-9|--sampler heun --steps 5 --spacing karras"
        "heun-karras-19|--sampler heun --steps 10 --spacing karras") ;;
    *) echo "recipe-table: --cases is full, quick, bars or demo, not $SET" >&2; exit 2 ;;
esac
files=()
for run in "${RUNS[@]}"; do
    label="${run%%=*}"
    dir="${run#*=}"
    [[ "$label" == "$run" ]] && label="$(basename "$dir")"
    mkdir -p "$OUT/$label"
    for c in "${CASES[@]}"; do
        name="${c%%|*}"
        flags="${c#*|}"
        npy="$OUT/$label/$name.npy"
        if [[ ! -f "$npy" ]]; then
            start=$(date +%s)
            # shellcheck disable=SC2086
            "$BIN" sample --checkpoint "$dir" --n "$N" --seed 0 $flags --out "$OUT/$label/$name.png" --npy "$npy" >/dev/null
            echo "$label $name: $(($(date +%s) - start)) s" >&2
        fi
        files+=("$npy")
    done
done
"$PY" scripts/quality.py "${files[@]}" --json "$OUT/quality.json" >&2
"$PY" - "$OUT/quality.json" <<'PYEOF'
import json, sys
from pathlib import Path
q = json.load(open(sys.argv[1]))
table, cols = {}, []
for r in q["rows"]:
    p = Path(r["samples"])
    label, case = p.parent.name, p.stem
    table.setdefault(label, {})[case] = r
    if case not in cols:
        cols.append(case)
r0 = q["rows"][0]
print(f"Feature FID (lower is better) of {r0['n']} samples; floor (held-out real digits) "
      f"{r0['real']['fid']:.2f}, uniform noise {r0['noise']['fid']:.1f}; classifier held-out accuracy "
      f"{q['heldout_accuracy']:.3f}. In brackets: mean confidence / class balance.\n")
print("| recipe | " + " | ".join(cols) + " |")
print("| --- |" + " ---: |" * len(cols))
for label, row in table.items():
    cells = [f"{row[c]['fid']:.1f} ({row[c]['confidence']:.2f}/{row[c]['balance']:.2f})" if c in row else "" for c in cols]
    print(f"| {label} | " + " | ".join(cells) + " |")
PYEOF
