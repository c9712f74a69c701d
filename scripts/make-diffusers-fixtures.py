#!/usr/bin/env python3
"""Makes the diffusers interop fixtures in tests/data/diffusers/ (run once;
the files are committed and CI needs no Python).

Each fixture is a folder as diffusers' save_pretrained writes it:
  config.json, diffusion_pytorch_model.safetensors, scheduler_config.json
plus io.safetensors: the model's input (x, t) and its output, computed by
diffusers in float32 (`out`) and in float64 (`out_f64`). diffusers computes
the sinusoidal time embedding in float32 whatever the model's dtype, so for
`out_f64` the same formula (sin first, 10000^(-i/(half-1))) is computed in
float64: the f64 output then checks the mapping to f64 rounding.

Every parameter is random (norm weights and biases too), so a name or a
reshape mixed up in the mapping changes the output.

Versions used (tests/data/diffusers/requirements.txt): see that file.
Run: python3 scripts/make-diffusers-fixtures.py [OUT_DIR]
"""
import math
import sys
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

# The DDPM layout that `diffuse import` accepts.
DDPM = dict(
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    attention_head_dim=None,
    norm_eps=1e-6,
    act_fn="silu",
)

FIXTURES = {
    # 1 channel, 3 levels (8 -> 4 -> 2), attention at the middle level, 2 resnets a level.
    "ddpm-1ch": dict(
        unet=dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8, 16),
                  layers_per_block=2, norm_num_groups=4, dropout=0.1,
                  down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
        scheduler=dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                       variance_type="fixed_small", prediction_type="epsilon", clip_sample=True),
        batch=2, t=[17, 911],
    ),
    # 3 channels, odd last side (6 -> 3), attention at the first level, 1 resnet a level.
    "ddpm-3ch": dict(
        unet=dict(sample_size=6, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                  layers_per_block=1, norm_num_groups=4,
                  down_block_types=("AttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "AttnUpBlock2D")),
        scheduler=dict(num_train_timesteps=500, beta_schedule="squaredcos_cap_v2",
                       variance_type="fixed_large", prediction_type="v_prediction", clip_sample=True),
        batch=3, t=[0, 250, 499],
    ),
}


def randomise(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            elif "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


class SinusoidF64(torch.nn.Module):
    """diffusers' Timesteps(ch, flip_sin_to_cos=False, downscale_freq_shift=1), in float64."""

    def __init__(self, ch):
        super().__init__()
        self.half = ch // 2

    def forward(self, t):
        i = torch.arange(self.half, dtype=torch.float64)
        freqs = torch.exp(-math.log(10000.0) * i / (self.half - 1))
        arg = t.double()[:, None] * freqs[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


def main():
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "tests/data/diffusers"
    for i, (name, spec) in enumerate(FIXTURES.items()):
        out = root / name
        gen = torch.Generator().manual_seed(1234 + i)
        model = UNet2DModel(**DDPM, **spec["unet"]).eval()
        randomise(model, gen)
        model.save_pretrained(out, safe_serialization=True)
        DDPMScheduler(**spec["scheduler"]).save_pretrained(out)
        c, s = spec["unet"]["in_channels"], spec["unet"]["sample_size"]
        x = torch.randn(spec["batch"], c, s, s, generator=gen)
        t = torch.tensor(spec["t"], dtype=torch.int64)
        with torch.no_grad():
            y = model(x, t).sample
            model.double().time_proj = SinusoidF64(spec["unet"]["block_out_channels"][0])
            y64 = model(x.double(), t).sample
        save_file({"x": x.contiguous(), "t": t, "out": y.contiguous(), "out_f64": y64.contiguous()},
                  out / "io.safetensors")
        n = sum(p.numel() for p in model.parameters())
        print(f"{name}: {n} parameters, |out| max {y.abs().max():.4f}, "
              f"f32 vs f64 max diff {(y.double() - y64).abs().max():.3e}")


if __name__ == "__main__":
    main()
