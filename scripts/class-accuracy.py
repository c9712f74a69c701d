#!/usr/bin/env python3
"""How often a class-conditional model draws the class it was asked for,
judged by the independent digit classifier of scripts/quality.py (a small
CNN trained with PyTorch on the bundled training digits, nothing shared
with the diffusion model).

Input: what `diffuse sample --class all --n N --npy S.npy` writes: N/K
images per class, in class order (float32 (N, 1, 28, 28) in [0, 1]).
Output per file: accuracy (classifier's label == the class asked for),
per-class accuracy, mean confidence and the feature FID against the
training digits (as quality.py computes it), with the held-out real
digits' accuracy beside it (the classifier's own ceiling).

Setup as scripts/quality.py (any Python with torch and numpy):
  .venv/bin/python scripts/class-accuracy.py w0.npy w1.npy w2.npy w4.npy [--classes 10] [--json out.json]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (the same classifier, cached in target/quality/)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("samples", nargs="+", type=Path)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    d, key = quality.load_digits()
    model, path, cached = quality.train_classifier(d, f"v{quality.RECIPE['version']}-{key}")
    _, tp = quality.embed(model, d["t10k-images"])
    ceiling = float((tp.argmax(1) == d["t10k-labels"]).mean())
    ref = quality.stats(quality.embed(model, d["train-images"])[0])
    print(f"classifier: {path.name} ({'cached' if cached else 'trained'}), held-out real-digit accuracy {ceiling:.4f}")
    rows = []
    for p in a.samples:
        x = quality.load_samples(p)
        n = len(x)
        if n % a.classes:
            sys.exit(f"error: {p}: {n} samples is not a whole number per class of {a.classes} classes")
        per = n // a.classes
        want = np.repeat(np.arange(a.classes), per)
        f, prob = quality.embed(model, x)
        pred = prob.argmax(1)
        acc = float((pred == want).mean())
        per_class = [float((pred[want == k] == k).mean()) for k in range(a.classes)]
        fid = quality.fid(quality.stats(f), ref)
        rows.append(dict(samples=str(p), n=n, accuracy=acc, per_class=per_class,
                         confidence=float(prob.max(1).mean()), fid=fid))
        print(f"{str(p)[-40:]:<40} N {n:>5}  accuracy {acc:.4f}  conf {prob.max(1).mean():.3f}  FID {fid:8.2f}  "
              f"per class {' '.join(f'{v:.2f}' for v in per_class)}")
    if a.json:
        tmp = a.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(classifier=path.name, heldout_accuracy=ceiling, rows=rows), indent=1))
        tmp.replace(a.json)


if __name__ == "__main__":
    main()
