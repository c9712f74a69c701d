#!/usr/bin/env bash
# Measures diffuse's CPU benchmarks and PyTorch's reference figures in one
# run, on the same machine, back to back, for BENCHMARKS.md.
#   bash scripts/bench-vs-pytorch.sh [OUT_DIR]
# PyTorch comes from $TORCH_PYTHON, or a .venv created here
# (python3 -m venv .venv && .venv/bin/pip install torch safetensors numpy).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-target/bench-vs-pytorch}"
mkdir -p "$OUT"
REF="${DIFFUSE_REFERENCE:-../shared/reference}"
PY="${TORCH_PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ ! -x .venv/bin/python ]]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet torch safetensors numpy
    fi
    PY=.venv/bin/python
fi
{
    date -u +"date: %Y-%m-%dT%H:%M:%SZ"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) threads"
    echo "rustc: $(rustc --version)"
    echo "torch: $("$PY" -c 'import torch; print(torch.__version__)')"
} | tee "$OUT/machine.txt"

echo "== diffuse criterion benches"
cargo bench --bench conv -- --noplot 2>&1 | tee "$OUT/conv.txt"
cargo bench --bench norm_attention_linear -- --noplot 2>&1 | tee "$OUT/norm_attention_linear.txt"
cargo bench --bench elementwise -- --noplot 2>&1 | tee "$OUT/elementwise.txt"
cargo bench --bench train_step -- --noplot "unet mnist" 2>&1 | tee "$OUT/train_step.txt"

echo "== PyTorch, same machine, same run"
(cd "$REF" && "$PY" ops_bench.py --threads 2) | tee "$OUT/torch_ops.json"
(cd "$REF" && "$PY" train_step.py --config mnist --batch 64 --mode train) | tee "$OUT/torch_train.json"
(cd "$REF" && "$PY" train_step.py --config mnist --batch 64 --mode sample) | tee "$OUT/torch_sample.json"
