#!/usr/bin/env python3
"""Checks `diffuse export --to diffusers` with diffusers itself (not run by CI).

    python3 scripts/check-diffusers-export.py CKPT_OR_RUN_DIR [--out DIR] [--no-ema]
        [--diffuse target/release/diffuse] [--n 4] [--seed 0]

1. exports the checkpoint (EMA weights unless --no-ema) to DIR (default: a
   temporary folder) with `diffuse export --to diffusers`;
2. loads it with UNet2DModel.from_pretrained and DDPMScheduler.from_pretrained,
   failing on any missing, unexpected or mismatched key or loading warning,
   and runs two steps of a DDPMPipeline built from them;
3. feeds the same random (x, t) to diffusers (float32, and float64 with the
   time embedding in float64 too) and to `diffuse forward`, and prints the
   differences.

Needs torch, diffusers and safetensors (tests/data/diffusers/requirements.txt).
"""
import argparse
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.utils import logging as dlogging
from safetensors.torch import load_file, save_file


class SinusoidF64(torch.nn.Module):
    """diffusers' Timesteps(ch, flip_sin_to_cos=False, downscale_freq_shift=1), in float64."""

    def __init__(self, ch):
        super().__init__()
        self.half = ch // 2

    def forward(self, t):
        i = torch.arange(self.half, dtype=torch.float64)
        arg = t.double()[:, None] * torch.exp(-math.log(10000.0) * i / (self.half - 1))[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


def find_diffuse(given):
    if given:
        return given
    root = Path(__file__).resolve().parent.parent
    for p in (root / "target/release/diffuse", root / "target/debug/diffuse"):
        if p.exists():
            return str(p)
    return shutil.which("diffuse") or sys.exit("error: no diffuse binary: build it or pass --diffuse")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--out")
    ap.add_argument("--no-ema", action="store_true")
    ap.add_argument("--diffuse")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    diffuse = find_diffuse(a.diffuse)
    work = Path(tempfile.mkdtemp(prefix="diffuse-check-"))
    out = Path(a.out) if a.out else work / "export"
    ema = ["--no-ema"] if a.no_ema else []
    subprocess.run([diffuse, "export", "--to", "diffusers", a.checkpoint, "--out", str(out)] + ema, check=True)

    # Loading: every message diffusers logs or warns while loading is a failure.
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    dlogging.get_logger("diffusers").addHandler(handler)
    dlogging.set_verbosity_warning()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # low_cpu_mem_usage=False: without `accelerate` diffusers says so in a warning.
        unet, info = UNet2DModel.from_pretrained(out, output_loading_info=True, low_cpu_mem_usage=False)
        scheduler = DDPMScheduler.from_pretrained(out)
    problems = {k: v for k, v in info.items() if v}
    messages = [r.getMessage() for r in records] + [str(w.message) for w in caught]
    print(f"diffusers {__import__('diffusers').__version__}, torch {torch.__version__}")
    print(f"loading info: {info}")
    for m in messages:
        print(f"loading message: {m}")
    if problems or messages:
        sys.exit("error: diffusers reported problems while loading the export")
    unet.eval()
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    print(f"DDPMPipeline: 2 steps, image {images.shape}, finite {bool((images == images).all())}")

    # Outputs: the same (x, t) through diffusers and through diffuse.
    cfg = unet.config
    gen = torch.Generator().manual_seed(a.seed)
    x = torch.randn(a.n, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (a.n,), generator=gen, dtype=torch.int64)
    save_file({"x": x, "t": t}, work / "input.safetensors")
    subprocess.run([diffuse, "forward", "--checkpoint", a.checkpoint, "--input", str(work / "input.safetensors"),
                    "--out", str(work / "ours.safetensors")] + ema, check=True, stdout=subprocess.DEVNULL)
    ours = load_file(work / "ours.safetensors")["out"].double()
    with torch.no_grad():
        theirs = unet(x, t).sample.double()
        unet.double().time_proj = SinusoidF64(cfg.block_out_channels[0])
        exact = unet(x.double(), t).sample
    scale = exact.abs().max().item()

    def report(label, y):
        d = (y - exact if label.endswith("f64") else y - theirs).abs().max().item()
        return f"{label}: max abs {d:.3e}, max rel {d / scale:.3e}"

    print(f"x {tuple(x.shape)}, t {t.tolist()}, |output| max {scale:.4f}")
    print(report("diffuse f32 vs diffusers f32", ours))
    print(report("diffuse f32 vs diffusers f64", ours))
    print(report("diffusers f32 vs diffusers f64", theirs))
    for f in ("input.safetensors", "ours.safetensors"):
        (work / f).unlink()
    print(f"export: {out}")


if __name__ == "__main__":
    main()
