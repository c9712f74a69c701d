#!/usr/bin/env bash
# Issue 20's training runs: the mnist preset trained by each recipe of the
# table (today's, min-SNR-5, v-target, cosine), seed 0, to --steps, then the
# table at each step count of --table-at (scripts/recipe-table.sh on the
# checkpoints of that step).
#
#   bash scripts/recipe-runs.sh [--steps N] [--table-at N,N...] [--runs DIR] [--cases SET] [--no-table] [LABEL...]
#
#   --steps     optimiser steps each run reaches (default 10000)
#   --table-at  step counts to score (default 2000,10000; each must be a
#               multiple of the checkpoint interval, 500)
#   --runs      where the runs and tables live (default runs/recipes)
#   --cases     the sampler grid, as recipe-table.sh (default full)
#   LABEL...    only these recipes (default all four, in the table's order)
#
# Safe to stop and run again: a run that exists is resumed (`train --resume`
# continues bit for bit), one that reached --steps is left alone, and
# recipe-table.sh skips samples it already has. The learning rate is constant
# after warmup, so the first 2,000 steps of a 10,000-step run are the
# 2,000-step run: one run gives both columns. On a 2-core CPU a run takes
# about 0.9 s a step (2.5 h for 10,000); a GPU does it in minutes.
# Needs a built diffuse ($DIFFUSE, default target/release/diffuse) and, for the
# tables, a Python with torch and numpy ($TORCH_PYTHON; see recipe-table.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=10000
TABLE_AT=2000,10000
RUNS=runs/recipes
SET=full
TABLE=1
LABELS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --steps) STEPS="$2"; shift 2 ;;
        --table-at) TABLE_AT="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --cases) SET="$2"; shift 2 ;;
        --no-table) TABLE=0; shift ;;
        -h|--help) sed -n 2,24p "$0"; exit 0 ;;
        -*) echo "recipe-runs: unknown option $1" >&2; exit 2 ;;
        *) LABELS+=("$1"); shift ;;
    esac
done
BIN="${DIFFUSE:-target/release/diffuse}"
if [[ ! -x "$BIN" ]]; then
    echo "recipe-runs: no diffuse binary at $BIN (cargo build --release, or set DIFFUSE)" >&2
    exit 1
fi

# label | training flags (beside the defaults: mnist preset, batch 64, lr 5e-4, EMA 0.9999 with warmup)
RECIPES=(
    "today|--loss-weighting none"
    "min-snr-5|--loss-weighting min-snr"
    "v-target|--target v --loss-weighting none"
    "cosine|--schedule cosine --loss-weighting none"
)
flags_of() {
    local r
    for r in "${RECIPES[@]}"; do
        [[ "${r%%|*}" == "$1" ]] && { echo "${r#*|}"; return 0; }
    done
    return 1
}
if [[ ${#LABELS[@]} -eq 0 ]]; then
    for r in "${RECIPES[@]}"; do LABELS+=("${r%%|*}"); done
fi
for label in "${LABELS[@]}"; do
    flags_of "$label" > /dev/null || { echo "recipe-runs: no recipe $label (today, min-snr-5, v-target, cosine)" >&2; exit 2; }
done
IFS=, read -r -a AT <<< "$TABLE_AT"
for at in "${AT[@]}"; do
    if ! [[ "$at" =~ ^[0-9]+$ ]] || (( at == 0 || at % 500 != 0 || at > STEPS )); then
        echo "recipe-runs: --table-at $at is not a multiple of 500 between 500 and --steps ($STEPS)" >&2
        exit 2
    fi
done
mkdir -p "$RUNS"
# Every checkpoint of a run is kept (the table reads earlier ones); 26 MB each.
KEEP=$((STEPS / 500 + 1))

ckpt() { printf '%s/%s/checkpoints/ckpt-%08d.safetensors' "$RUNS" "$1" "$2"; }

for label in "${LABELS[@]}"; do
    dir="$RUNS/$label"
    newest=$(compgen -G "$dir/checkpoints/ckpt-*.safetensors" | sort | tail -n 1 || true)
    newest=${newest##*/ckpt-}
    newest=${newest%.safetensors}
    newest=$((10#${newest:-0}))
    if (( newest >= STEPS )); then
        echo "== $label: reached $STEPS steps (newest checkpoint: step $newest)" >&2
        continue
    fi
    start=$(date +%s)
    if [[ -d "$dir/checkpoints" ]] && compgen -G "$dir/checkpoints/ckpt-*.safetensors" > /dev/null; then
        echo "== $label: resuming to $STEPS steps" >&2
        "$BIN" train --resume "$dir" --steps "$STEPS" --keep "$KEEP"
    else
        echo "== $label: training $STEPS steps" >&2
        # shellcheck disable=SC2046
        "$BIN" train --out "$dir" --seed 0 --steps "$STEPS" --sample-every 0 --checkpoint-every 500 --keep "$KEEP" \
            $(flags_of "$label")
    fi
    echo "== $label: $(($(date +%s) - start)) s" >&2
done

[[ $TABLE == 1 ]] || exit 0
for at in "${AT[@]}"; do
    args=()
    for label in "${LABELS[@]}"; do
        c="$(ckpt "$label" "$at")"
        if [[ ! -f "$c" ]]; then
            # A run extended after its table was made may have pruned the
            # checkpoint; its samples are still there and are reused.
            if compgen -G "$RUNS/table-$at/$label/*.npy" > /dev/null; then
                echo "recipe-runs: $c is gone; reusing the samples in $RUNS/table-$at/$label" >&2
            else
                echo "recipe-runs: $c is missing (was the run made with fewer checkpoints kept?)" >&2
                exit 1
            fi
        fi
        args+=("$label=$c")
    done
    echo "== table at $at steps" >&2
    bash scripts/recipe-table.sh --cases "$SET" --out "$RUNS/table-$at" "${args[@]}" | tee "$RUNS/table-$at.md"
done
