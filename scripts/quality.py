#!/usr/bin/env python3
"""Scores generated digits with a classifier that knows nothing of the
diffusion model: a small CNN trained here, with PyTorch, on the 9,000
training digits of data/mnist10k, and its 128-d penultimate layer as the
feature space.

For each .npy of samples (what `diffuse sample --npy` writes: float32
(N, 1, 28, 28) in [0, 1]) it reports
  fid         Frechet distance between the samples' features and those of the
              9,000 training digits (lower is better);
  confidence  the classifier's mean top-class probability;
  balance     entropy of the predicted-class histogram / log(10) (1 = every
              digit equally often), and the rarest and commonest counts;
and beside every figure the same numbers for two references of the same N:
  real        held-out real digits (data/mnist10k t10k, up to 1,000): the floor
              (FID is biased upwards at small N, so compare at equal N);
  noise       uniform [0, 1] noise: the ceiling.

Deterministic: fixed seeds, deterministic torch kernels, one thread order;
the trained classifier is cached in target/quality/ (keyed by the training
recipe and the data files' hashes), so the scorer is the same from run to run.

Setup: any Python with torch and numpy, e.g.
  python3 -m venv .venv && .venv/bin/pip install torch numpy
Run:
  .venv/bin/python scripts/quality.py samples.npy [more.npy ...] [--json out.json]
"""
import argparse
import gzip
import hashlib
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "mnist10k"
CACHE = ROOT / "target" / "quality"
RECIPE = dict(version=2, epochs=10, batch=64, lr=1e-3, seed=0, width=(32, 64), features=128)


def read_idx(path):
    raw = gzip.open(path, "rb").read()
    magic, n = struct.unpack(">II", raw[:8])
    if magic == 0x803:
        h, w = struct.unpack(">II", raw[8:16])
        return np.frombuffer(raw[16:], np.uint8).reshape(n, 1, h, w).astype(np.float32) / 255.0
    if magic == 0x801:
        return np.frombuffer(raw[8:], np.uint8).astype(np.int64)
    raise ValueError(f"{path}: not an MNIST IDX file (magic {magic:#x})")


def load_digits():
    files = {k: DATA / f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz"
             for k in ["train-images", "train-labels", "t10k-images", "t10k-labels"]}
    digest = hashlib.sha256()
    for k in sorted(files):
        digest.update(files[k].read_bytes())
    d = {k: read_idx(p) for k, p in files.items()}
    return d, digest.hexdigest()[:16]


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        c1, c2 = RECIPE["width"]
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc1 = nn.Linear(c2 * 7 * 7, RECIPE["features"])
        self.fc2 = nn.Linear(RECIPE["features"], 10)

    def features(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x):
        return self.fc2(self.features(x))


def train_classifier(d, key):
    path = CACHE / f"classifier-{key}.pt"
    model = Classifier()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), path, True
    torch.manual_seed(RECIPE["seed"])
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
    x, y = torch.from_numpy(d["train-images"]), torch.from_numpy(d["train-labels"])
    g = torch.Generator().manual_seed(RECIPE["seed"])
    for _ in range(RECIPE["epochs"]):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), RECIPE["batch"]):
            idx = order[i:i + RECIPE["batch"]]
            # Small random shifts make the features less brittle to the
            # slightly off-centre strokes of generated digits.
            xb = torch.roll(x[idx], shifts=(int(torch.randint(-2, 3, (1,), generator=g)),
                                            int(torch.randint(-2, 3, (1,), generator=g))), dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model.eval(), path, False


@torch.no_grad()
def embed(model, images):
    feats, probs = [], []
    for i in range(0, len(images), 500):
        xb = torch.from_numpy(np.ascontiguousarray(images[i:i + 500], dtype=np.float32))
        f = model.features(xb)
        feats.append(f.double())
        probs.append(F.softmax(model.fc2(f), dim=1).double())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def stats(f):
    return f.mean(0), np.cov(f, rowvar=False)


def fid(a, b):
    (m1, s1), (m2, s2) = a, b
    # tr sqrt(S1 S2) = sum of sqrt(eig(sqrt(S1) S2 sqrt(S1))), all symmetric PSD.
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    e = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(e, 0, None)).sum())


def score(model, images, ref):
    f, p = embed(model, images)
    pred = p.argmax(1)
    counts = np.bincount(pred, minlength=10)
    q = counts / counts.sum()
    entropy = -sum(x * math.log(x) for x in q if x > 0) / math.log(10)
    return dict(n=len(images), fid=fid(stats(f), ref), confidence=float(p.max(1).mean()), balance=entropy,
                min_class=int(counts.min()), max_class=int(counts.max()))


def load_samples(path):
    a = np.load(path)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1:] != (1, 28, 28):
        sys.exit(f"error: {path}: expected samples of shape (N, 1, 28, 28), got {a.shape}")
    if not np.isfinite(a).all():
        sys.exit(f"error: {path}: non-finite values")
    return a.astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("samples", nargs="*", type=Path)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    d, key = load_digits()
    model, path, cached = train_classifier(d, f"v{RECIPE['version']}-{key}")
    _, tp = embed(model, d["t10k-images"])
    acc = float((tp.argmax(1) == d["t10k-labels"]).mean())
    print(f"classifier: {path.relative_to(ROOT)} ({'cached' if cached else 'trained'}), "
          f"held-out accuracy {acc:.4f}")
    ref = stats(embed(model, d["train-images"])[0])
    rows, baselines = [], {}

    def baseline(n):
        if n not in baselines:
            real = d["t10k-images"][:min(n, len(d["t10k-images"]))]
            noise = np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)
            baselines[n] = (score(model, real, ref), score(model, noise, ref))
        return baselines[n]

    print(f"{'samples':<40} {'N':>5} {'FID':>8} {'conf':>6} {'balance':>7} {'min/max':>9} | "
          f"{'real FID':>8} {'conf':>6} {'bal':>5} | {'noise FID':>9} {'conf':>6}")
    for p in args.samples or []:
        s = score(model, load_samples(p), ref)
        real, noise = baseline(s["n"])
        rows.append(dict(samples=str(p), **s, real=real, noise=noise))
        print(f"{str(p)[-40:]:<40} {s['n']:>5} {s['fid']:>8.2f} {s['confidence']:>6.3f} {s['balance']:>7.3f} "
              f"{s['min_class']:>4}/{s['max_class']:<4} | {real['fid']:>8.2f} {real['confidence']:>6.3f} "
              f"{real['balance']:>5.3f} | {noise['fid']:>9.2f} {noise['confidence']:>6.3f}")
    if not args.samples:
        real, noise = baseline(1000)
        print(f"{'(no samples: references at N = 1000)':<40} {'':>5} {'':>8} {'':>6} {'':>7} {'':>9} | "
              f"{real['fid']:>8.2f} {real['confidence']:>6.3f} {real['balance']:>5.3f} | "
              f"{noise['fid']:>9.2f} {noise['confidence']:>6.3f}")
    if args.json:
        out = dict(classifier=str(path.relative_to(ROOT)), heldout_accuracy=acc, recipe=RECIPE, rows=rows)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
