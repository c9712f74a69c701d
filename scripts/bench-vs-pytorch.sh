#!/usr/bin/env bash
# diffuse against PyTorch on this CPU, same configuration, same thread count,
# back to back: the ratios of issue 17 (time and peak memory, ours / PyTorch).
#
#   bash scripts/bench-vs-pytorch.sh [--rounds N] [--threads N] [--case "CONFIG MODE BATCH"]... [--ops] [OUT_DIR]
#
# For each case (mnist train/sample at batch 64 and 128, cifar10 train/sample
# at batch 8; or only the `--case`s given) it alternates, N rounds (default 3): `diffuse bench step`, then
# PyTorch's `train_step.py` in NCHW and in channels-last. Each side's figure
# is its best median over the rounds (PyTorch: the better layout), so a noisy
# neighbour costs both sides alike. Peak memory is each process's VmHWM.
# Writes OUT_DIR/{runs.jsonl,ratios.md,machine.txt} (default target/bench-vs-pytorch).
# `--ops` also runs the criterion op benches and PyTorch's ops_bench.py first.
#
# PyTorch comes from $TORCH_PYTHON, or a .venv created here
# (python3 -m venv .venv && .venv/bin/pip install torch safetensors numpy).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3
THREADS=2
OPS=0
OUT=target/bench-vs-pytorch
CASES=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --ops) OPS=1; shift ;;
        --case) CASES+=("$2"); shift 2 ;;
        -h|--help) sed -n 2,18p "$0"; exit 0 ;;
        -*) echo "error: unknown option $1" >&2; exit 2 ;;
        *) OUT="$1"; shift ;;
    esac
done
mkdir -p "$OUT"
REF="${DIFFUSE_REFERENCE:-../shared/reference}"
if [[ ! -f "$REF/train_step.py" ]]; then
    echo "error: PyTorch reference scripts not found in $REF (set DIFFUSE_REFERENCE)" >&2
    exit 1
fi
PY="${TORCH_PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ ! -x .venv/bin/python ]]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet torch safetensors numpy
    fi
    PY=.venv/bin/python
fi
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"

cargo build --release --quiet
BIN="$(pwd)/target/release/diffuse"
{
    date -u +"date: %Y-%m-%dT%H:%M:%SZ"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $THREADS threads"
    echo "rustc: $(rustc --version)"
    echo "diffuse: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
    echo "torch: $("$PY" -c 'import torch; print(torch.__version__)')"
    echo "rounds: $ROUNDS"
} | tee "$OUT/machine.txt"

if [[ $OPS == 1 ]]; then
    echo "== op benches: diffuse (criterion), then PyTorch"
    cargo bench --bench conv -- --noplot 2>&1 | tee "$OUT/conv.txt"
    cargo bench --bench norm_attention_linear -- --noplot 2>&1 | tee "$OUT/norm_attention_linear.txt"
    cargo bench --bench elementwise -- --noplot 2>&1 | tee "$OUT/elementwise.txt"
    (cd "$REF" && "$PY" ops_bench.py --threads "$THREADS") | tee "$OUT/torch_ops.json"
fi

# config mode batch
if [[ ${#CASES[@]} -eq 0 ]]; then
    CASES=(
        "mnist train 64" "mnist sample 64"
        "mnist train 128" "mnist sample 128"
        "cifar10 train 8" "cifar10 sample 8"
    )
fi
RUNS="$OUT/runs.jsonl"
: > "$RUNS"
for round in $(seq 1 "$ROUNDS"); do
    for case in "${CASES[@]}"; do
        read -r config mode batch <<< "$case"
        echo "== round $round: $config $mode batch $batch"
        ours=$("$BIN" bench step --config "$config" --mode "$mode" --batch-size "$batch" \
            --threads "$THREADS" --steps 5 --warmup 2 | tail -n 1)
        echo "{\"side\":\"diffuse\",\"round\":$round,\"result\":$ours}" >> "$RUNS"
        for layout in "" "--channels-last"; do
            theirs=$(cd "$REF" && "$PY" train_step.py --config "${config/cifar10/cifar}" --mode "$mode" --batch "$batch" \
                --threads "$THREADS" --steps 5 --warmup 2 $layout | tail -n 1)
            echo "{\"side\":\"pytorch\",\"round\":$round,\"result\":$theirs}" >> "$RUNS"
        done
    done
done

python3 - "$RUNS" "$OUT/ratios.md" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
TIME_BAR, MEM_BAR = 0.8, 0.3
best = {}
for r in runs:
    res = r["result"]
    key = ({"cifar": "cifar10"}.get(res["config"], res["config"]), res["mode"], res.get("batch_size", res.get("batch")))
    side = best.setdefault(key, {})
    rss = res["peak_rss_bytes"] / 1e6 if r["side"] == "diffuse" else res["peak_rss_mb"] * 1.048576
    entry = side.setdefault(r["side"], {"median_s": float("inf"), "rss_mb": float("inf"), "layout": ""})
    if res["median_s"] < entry["median_s"]:
        entry["median_s"] = res["median_s"]
        if r["side"] == "pytorch":
            entry["layout"] = "NHWC" if res.get("channels_last") else "NCHW"
    entry["rss_mb"] = min(entry["rss_mb"], rss)
lines = ["| case | diffuse s | PyTorch s (layout) | time ratio (bar <= 0.8) | diffuse MB | PyTorch MB | memory ratio (bar <= 0.3) |",
         "| --- | --- | --- | --- | --- | --- | --- |"]
ok = True
for (config, mode, batch), side in best.items():
    d, p = side["diffuse"], side["pytorch"]
    tr, mr = d["median_s"] / p["median_s"], d["rss_mb"] / p["rss_mb"]
    t_ok, m_ok = tr <= TIME_BAR, mr <= MEM_BAR
    ok &= t_ok and m_ok
    mem = f"{mr:.2f} {'ok' if m_ok else 'MISSED'}"
    lines.append(f"| {config} {mode} batch {batch} | {d['median_s']:.4f} | {p['median_s']:.4f} ({p['layout']}) | "
                 f"{tr:.2f} {'ok' if t_ok else 'MISSED'} | {d['rss_mb']:.0f} | {p['rss_mb']:.0f} | {mem} |")
text = "\n".join(lines)
print(text)
open(sys.argv[2], "w").write(text + "\n")
print("all bars met" if ok else "some bars missed")
EOF
