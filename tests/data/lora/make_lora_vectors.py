"""LoRA test vectors: one training step of a LoRA-wrapped DDPM U-Net in PyTorch.

Made with Python 3.11, torch 2.15.0, safetensors 0.8.0, numpy 2.4.6 (CPU) by

    python make_lora_vectors.py --out lora_step.safetensors

The reference model is ../shared/reference/ddpm_unet.py (found through
--reference, default /work/shared/reference). A small config (ch 8, 8x8
images, attention at 4x4) keeps the file small. Every base weight is random
(float32 values, computed in float64) and frozen. LoRA (Hu et al. 2021, as
peft wraps nn.Conv2d): out = conv(x) + (alpha / r) * B(A(x)), A a conv with
the base's kernel, stride and padding to r channels, B a 1x1 conv back to
the output channels, both without bias; B is random here (peft starts it at
zero, which would make every gradient of A zero). Targets: every attention
projection (q, k, v, proj_out), the strided downsample conv (asymmetric
padding), a 3x3 conv of the up path, and conv_in (the first layer).

The file holds
  param.<name>          base weights (state_dict names, float32)
  lora.<layer>.lora_A.weight, lora.<layer>.lora_B.weight  (float32)
  input.x, input.t (float64 timesteps), input.target
  output.y              model(x, t)
  output.loss           mean((y - target)^2), shape [1]
  grad.<layer>.lora_A.weight, grad.<layer>.lora_B.weight  d loss / d adapter
(outputs and gradients float64) and the config, rank, alpha and target
layers as JSON in the metadata.
"""
import argparse, json, math, os, sys
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


class LoraConv(nn.Module):
    def __init__(self, base: nn.Conv2d, r: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / r
        self.A = nn.Conv2d(base.in_channels, r, base.kernel_size, base.stride, base.padding, bias=False)
        self.B = nn.Conv2d(r, base.out_channels, 1, bias=False)

    def forward(self, x):
        return self.base(x) + self.scale * self.B(self.A(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--reference", default="/work/shared/reference")
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    sys.path.insert(0, a.reference)
    import ddpm_unet as unet

    def emb64(t, dim):  # the reference's formula, in float64 like the whole step
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(10000.0) / (half - 1)))
        e = t.double()[:, None] * freqs[None, :]
        e = torch.cat([torch.sin(e), torch.cos(e)], dim=1)
        return F.pad(e, (0, 1)) if dim % 2 else e

    unet.timestep_embedding = emb64

    torch.manual_seed(a.seed)
    cfg = unet.UNetConfig(in_ch=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                          dropout=0.0, groups=2, image_size=8)
    model = unet.UNet(cfg).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan = p[0].numel() if p.dim() > 1 else p.numel()
            v = torch.randn_like(p) / math.sqrt(fan) if p.dim() > 1 else 0.1 * torch.randn_like(p)
            if ("norm" in name) and name.endswith("weight"):
                v += 1.0
            p.copy_(v.float().double())
            p.requires_grad_(False)
    base = {k: v.float().contiguous() for k, v in model.state_dict().items()}

    rank, alpha = 3, 5.0
    layers = [n for n, m in model.named_modules()
              if isinstance(m, nn.Conv2d) and n.split(".")[-1] in ("q", "k", "v", "proj_out")]
    layers += ["down.0.downsample.conv", "up.0.blocks.0.conv1", "conv_in"]
    tensors = {f"param.{k}": v for k, v in base.items()}
    adapters = {}
    for name in layers:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped = LoraConv(getattr(parent, attr), rank, alpha).double()
        with torch.no_grad():
            for which, w in (("A", wrapped.A.weight), ("B", wrapped.B.weight)):
                fan = w[0].numel()
                w.copy_((torch.randn_like(w) / math.sqrt(fan)).float().double())
                tensors[f"lora.{name}.lora_{which}.weight"] = w.detach().float().contiguous()
                adapters[f"{name}.lora_{which}.weight"] = w
        setattr(parent, attr, wrapped)

    n = 3
    x = torch.randn(n, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([5.0, 377.0, 940.0], dtype=torch.float64)
    target = torch.randn(n, 1, 8, 8, dtype=torch.float64)
    y = model(x, t)
    loss = ((y - target) ** 2).mean()
    loss.backward()
    tensors.update({"input.x": x, "input.t": t, "input.target": target, "output.y": y.detach(),
                    "output.loss": loss.detach().reshape(1)})
    for k, w in adapters.items():
        tensors[f"grad.{k}"] = w.grad.detach().clone()
    meta = {
        "config": json.dumps({"in_ch": cfg.in_ch, "ch": cfg.ch, "ch_mult": list(cfg.ch_mult),
                              "num_res_blocks": cfg.num_res_blocks, "attn_resolutions": list(cfg.attn_resolutions),
                              "dropout": cfg.dropout, "groups": cfg.groups, "image_size": cfg.image_size}),
        "rank": str(rank), "alpha": str(alpha), "targets": json.dumps(layers),
        "torch": torch.__version__,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, a.out, metadata=meta)
    print(f"{a.out}: {len(tensors)} tensors, loss {loss.item():.6f}, {len(layers)} adapted layers")


if __name__ == "__main__":
    main()
