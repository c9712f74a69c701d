#!/usr/bin/env python3
"""Compares the loss curves of two runs of `diffuse train` that differ only
in --precision (issue 13): the mean loss of every WINDOW-step window of the
first run must be within MARGIN (relative) of the second's, as in
tests/bf16_training_curve.rs. Prints one JSON line; exits 1 when a window
is outside the margin. Standard library only.

usage: curve_compare.py RUN_BF16 RUN_FP32 [WINDOW] [MARGIN]
"""
import json
import os
import sys


def losses(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f if line.strip()]


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    a, b = losses(sys.argv[1]), losses(sys.argv[2])
    window = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    margin = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
    if len(a) != len(b) or not a:
        raise SystemExit(f"the runs logged {len(a)} and {len(b)} steps")
    rows = []
    for i in range(0, len(a), window):
        ma = sum(a[i:i + window]) / len(a[i:i + window])
        mb = sum(b[i:i + window]) / len(b[i:i + window])
        rows.append({"steps": [i + 1, min(i + window, len(a))], "first": ma, "second": mb, "rel": abs(ma - mb) / mb})
    worst = max(r["rel"] for r in rows)
    ok = worst <= margin
    print(json.dumps({"kind": "curve", "steps": len(a), "window": window, "margin": margin,
                      "worst_rel": worst, "pass": ok, "windows": rows}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
