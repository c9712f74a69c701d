#!/usr/bin/env python3
"""Compares data-parallel runs of `diffuse train` (issue 18): the runs share
every flag but --gpus. Prints one JSON line: per run the mean images/s over
the logged steps after the first WARMUP, the scaling against the first run,
the largest loss and gradient-norm difference (relative) per step, and the
largest raw-weight difference of the last checkpoints in units of the
learning rate (AdamW moves a weight about lr a step). Standard library only.

usage: multigpu_compare.py LR RUN_DIR_1 RUN_DIR_2 [...]
"""
import json
import os
import struct
import sys

WARMUP = 3


def metrics(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def last_checkpoint(run):
    d = os.path.join(run, "checkpoints")
    names = sorted(n for n in os.listdir(d) if n.startswith("ckpt-") and n.endswith(".safetensors"))
    if not names:
        raise SystemExit(f"{run}: no checkpoint")
    return os.path.join(d, names[-1])


def weights(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__" or not name.startswith("model.") or meta["dtype"] != "F32":
            continue
        a, b = meta["data_offsets"]
        out[name] = struct.unpack(f"<{(b - a) // 4}f", data[base + a : base + b])
    return out


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    lr = float(argv[0])
    runs = argv[1:]
    ref_m, ref_w = metrics(runs[0]), weights(last_checkpoint(runs[0]))
    ref_ips = None
    result = {"runs": []}
    for run in runs:
        m = metrics(run)
        steady = [r["images_per_s"] for r in m[WARMUP:]] or [r["images_per_s"] for r in m]
        ips = sum(steady) / len(steady)
        ref_ips = ref_ips or ips
        by_step = {r["step"]: r for r in ref_m}
        dl = max((abs(r["loss"] - by_step[r["step"]]["loss"]) / abs(by_step[r["step"]]["loss"]) for r in m if r["step"] in by_step), default=None)
        dg = max((abs(r["grad_norm"] - by_step[r["step"]]["grad_norm"]) / abs(by_step[r["step"]]["grad_norm"]) for r in m if r["step"] in by_step), default=None)
        w = weights(last_checkpoint(run))
        dw = max(max(abs(x - y) for x, y in zip(w[k], ref_w[k])) for k in ref_w if k in w)
        result["runs"].append(
            {"run": os.path.basename(run.rstrip("/")), "images_per_s": round(ips, 2), "scaling": round(ips / ref_ips, 3),
             "max_rel_loss_diff": dl, "max_rel_grad_norm_diff": dg, "max_weight_diff_lr": dw / lr}
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
