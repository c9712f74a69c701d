"""Test vectors for a class-conditional DDPM U-Net training step, from PyTorch.

The reference model of ../shared/reference/ddpm_unet.py plus a class table,
as diffusers' UNet2DModel(num_class_embeds=K+1) has it: an nn.Embedding of
K+1 rows (the last is "no class") whose row for each label is added to the
time embedding after both dense layers, before the SiLU every ResnetBlock
applies. Everything else (random weights, float64 step stored as float32,
file layout) is ../shared/reference/make_vectors.py's, plus

  input.labels (int32)  the class of each image (K = "no class")

    python tests/data/testvectors/make_cond_vectors.py --reference ../shared/reference \
        --classes 10 --batch 5 --out tests/data/testvectors/unet_tiny_cond_step.safetensors
"""
import argparse, json, math, os, sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", default=os.path.join(os.path.dirname(__file__), "../../../../shared/reference"))
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sys.path.insert(0, os.path.abspath(a.reference))
    import ddpm_unet as unet
    from ddpm_unet import UNet, UNetConfig

    emb32 = unet.timestep_embedding
    unet.timestep_embedding = lambda t, dim: emb32(t, dim).double()  # whole step in float64

    class CondUNet(UNet):
        """The reference wiring, with class_emb(labels) added to the output of
        temb_dense1 (a forward hook), i.e. temb = dense1(silu(dense0(.))) + E[y]."""

        def __init__(self, cfg, num_classes):
            super().__init__(cfg)
            self.class_emb = torch.nn.Embedding(num_classes + 1, 4 * cfg.ch)
            self._labels = None
            self.temb_dense1.register_forward_hook(lambda m, inp, out: out + self.class_emb(self._labels))

        def forward(self, x, t, labels):
            self._labels = labels
            return UNet.forward(self, x, t)

    torch.manual_seed(a.seed)
    cfg = UNetConfig(in_ch=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                     dropout=0.0, groups=4, image_size=8)
    model = CondUNet(cfg, a.classes).double()
    with torch.no_grad():  # random weights everywhere, as make_vectors.py
        for name, p in model.named_parameters():
            fan = p[0].numel() if p.dim() > 1 else p.numel()
            p.copy_(torch.randn_like(p) / math.sqrt(fan) if p.dim() > 1 else 0.1 * torch.randn_like(p))
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or ".norm." in name or name == "norm_out.weight":
                p.add_(1.0)
            if name == "class_emb.weight":
                p.copy_(torch.randn_like(p))  # nn.Embedding's N(0, 1)
    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    B, C, S = a.batch, cfg.in_ch, cfg.image_size
    x0 = torch.rand(B, C, S, S, dtype=torch.float64) * 2 - 1
    noise = torch.randn(B, C, S, S, dtype=torch.float64)
    t = torch.randint(0, T, (B,))
    # two images share a class (its gradient row sums both), one is "no class"
    labels = torch.tensor([3, a.classes, 3, 0, a.classes - 1][:B])
    x_t = abar[t].sqrt().view(-1, 1, 1, 1) * x0 + (1 - abar[t]).sqrt().view(-1, 1, 1, 1) * noise
    eps = model(x_t, t, labels)
    loss = ((eps - noise) ** 2).mean()
    loss.backward()
    out = {f"param.{n}": p.detach().float().contiguous() for n, p in model.named_parameters()}
    out.update({f"grad.{n}": p.grad.detach().float().contiguous() for n, p in model.named_parameters()})
    out.update({"input.x0": x0.float(), "input.noise": noise.float(), "input.t": t.int(),
                "input.labels": labels.int(), "input.x_t": x_t.float(),
                "output.eps_pred": eps.detach().float(), "output.loss": loss.detach().float().reshape(1)})
    config = dict(cfg.__dict__)
    config["num_classes"] = a.classes
    meta = {"config": json.dumps(config), "betas": "linear 1e-4..0.02, T=1000",
            "loss": "mean over all elements of (eps_pred - noise)^2", "dtype": "computed in float64, stored float32",
            "params": str(sum(p.numel() for p in model.parameters())), "seed": str(a.seed),
            "made_by": "tests/data/testvectors/make_cond_vectors.py (torch " + torch.__version__ + ")"}
    save_file(out, a.out, metadata=meta)
    print(f"conditional tiny: {meta['params']} params, loss {loss.item():.6f}, wrote {a.out} ({os.path.getsize(a.out)} bytes)")


if __name__ == "__main__":
    main()
