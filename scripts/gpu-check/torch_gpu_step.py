"""PyTorch's DDPM training and sampling step on a GPU, beside `diffuse bench step`.

Based on ../shared/reference/train_step.py (same model, ddpm_unet.py, same
step: q_sample, eps-MSE, backward, clip 1.0, Adam) plus the EMA update
diffuse also does, timed with CUDA events (median over --steps after
--warmup). Precision/layout modes:
  fp32           eager float32, TF32 off for matmul and cuDNN
  tf32           eager, TF32 on (tensor cores for float32 convolutions)
  bf16           torch.autocast(bfloat16), TF32 on
  channels_last  fp32 weights/activations in NHWC, TF32 on
One JSON line per (config, mode, step kind) on stdout.

    python3 torch_gpu_step.py --config mnist --batch 64 [--modes fp32,tf32,bf16,channels_last]
    python3 torch_gpu_step.py --check     # import check only (no torch needed)
"""
import argparse
import json
import statistics
import sys

T = 1000
MODES = ("fp32", "tf32", "bf16", "channels_last")


def schedule(torch, device):
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    s = dict(beta=betas, alpha=1.0 - betas, sqrt_abar=abar.sqrt(), sqrt_1m_abar=(1.0 - abar).sqrt())
    return {k: v.float().to(device) for k, v in s.items()}


def measure(torch, F, UNet, cfg, config, batch, mode, kind, steps, warmup):
    dev = torch.device("cuda")
    tf32 = mode != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    fmt = torch.channels_last if mode == "channels_last" else torch.contiguous_format
    model = UNet(cfg).to(dev).to(memory_format=fmt)
    s = schedule(torch, dev)
    shape = (batch, cfg.in_ch, cfg.image_size, cfg.image_size)
    b = lambda v, t: v[t].view(-1, 1, 1, 1)
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16, enabled=(mode == "bf16"))
    if kind == "train":
        model.train()
        params = list(model.parameters())
        opt = torch.optim.Adam(params, lr=2e-4)
        ema = [p.detach().clone() for p in params]
        x0 = (torch.rand(shape, device=dev) * 2 - 1).contiguous(memory_format=fmt)

        def step(_i):
            t = torch.randint(0, T, (batch,), device=dev)
            eps = torch.randn_like(x0)
            xt = b(s["sqrt_abar"], t) * x0 + b(s["sqrt_1m_abar"], t) * eps
            with autocast():
                loss = F.mse_loss(model(xt, t).float(), eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1 - 0.9999)
    else:
        model.eval()
        x = torch.randn(shape, device=dev).contiguous(memory_format=fmt)

        @torch.no_grad()
        def step(i):
            nonlocal x
            t = torch.full((batch,), T - 1 - i % T, dtype=torch.long, device=dev)
            with autocast():
                eps = model(x, t).float()
            mean = (x - b(s["beta"], t) / b(s["sqrt_1m_abar"], t) * eps) / b(s["alpha"], t).sqrt()
            x = mean + b(s["beta"], t).sqrt() * torch.randn_like(x)

    for i in range(warmup):
        step(i)
    torch.cuda.synchronize()
    times = []
    for i in range(warmup, warmup + steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step(i)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    med = statistics.median(times)
    return dict(kind="torch_step", config=config, mode=mode, step=kind, batch=batch, steps=steps, warmup=warmup,
                timing="cuda-events", median_s=med, min_s=min(times), img_per_s=batch / med,
                gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                peak_mem_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", choices=["mnist", "cifar"], default="mnist")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--kinds", default="train,sample")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--check", action="store_true", help="check the arguments and the model file, run nothing")
    a = p.parse_args()
    modes = a.modes.split(",")
    bad = [m for m in modes if m not in MODES]
    if bad:
        sys.exit(f"error: unknown mode(s) {bad}; choose from {MODES}")
    if a.check:
        with open(__file__.replace("torch_gpu_step.py", "ddpm_unet.py")) as f:
            compile(f.read(), "ddpm_unet.py", "exec")
        print(json.dumps(dict(kind="torch_check", ok=True, modes=modes)))
        return
    import torch
    import torch.nn.functional as F
    from ddpm_unet import CONFIGS, UNet
    if not torch.cuda.is_available():
        sys.exit("error: torch sees no CUDA device")
    for mode in modes:
        for kind in a.kinds.split(","):
            try:
                r = measure(torch, F, UNet, CONFIGS[a.config], a.config, a.batch, mode, kind, a.steps, a.warmup)
            except Exception as e:  # one failing mode must not hide the others
                r = dict(kind="torch_step", config=a.config, mode=mode, step=kind, batch=a.batch, error=str(e))
            print(json.dumps(r), flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
