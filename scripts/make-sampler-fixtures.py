#!/usr/bin/env python3
"""Makes crates/trainer/tests/data/sampler_trajectories.json (run once; the
file is committed and CI needs no Python): trajectories of diffusers'
DPMSolverMultistepScheduler (dpmsolver++ and sde-dpmsolver++, midpoint,
order 2, final sigma 0) and HeunDiscreteScheduler for a fixed analytic
eps-model, to check crates/trainer/src/solvers.rs against an independent
implementation.

The eps-model is the exact one of a per-pixel two-component Gaussian mixture
(MIX below): for x = alpha (x0 + sigma eps), alpha = 1/sqrt(1 + sigma^2),
eps(x, sigma) = (x - alpha E[x0 | x]) / (alpha sigma). It is a function of the
noise level, not of the timestep, because diffusers rounds the timesteps it
gives the model while its solver uses the unrounded sigmas; the test gives
our solver the same function (crates/trainer/tests/solvers.rs).

Each trajectory is x (variance-preserving scale) before every step and after
the last one, in float64; Heun's states are those before each first-order
call (diffusers keeps x / alpha, converted back here). The SDE case records
the variance_noise it passed to each step.

Setup (any venv with torch and diffusers; versions used are in the output's
"versions" field):
  python3 -m venv .venv-diffusers && .venv-diffusers/bin/pip install torch diffusers numpy
  .venv-diffusers/bin/python scripts/make-sampler-fixtures.py
"""
import json
import math
import sys
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, HeunDiscreteScheduler

# weight, mean, std of the two components.
MIX = [(0.3, -0.5, 0.2), (0.7, 0.4, 0.15)]
SHAPE = (2, 1, 4, 4)


def eps_model(x, sigma):
    sigma = float(sigma)
    a = 1.0 / math.sqrt(1.0 + sigma * sigma)
    b = a * sigma
    logw, means = [], []
    for w, m, s in MIX:
        v = a * a * s * s + b * b
        logw.append(math.log(w) - 0.5 * math.log(v) - (x - a * m) ** 2 / (2 * v))
        means.append(m + a * s * s * (x - a * m) / v)
    logw = torch.stack(logw)
    post = torch.softmax(logw, dim=0)
    x0 = (post * torch.stack(means)).sum(0)
    return (x - a * x0) / b


def betas_config(schedule):
    if schedule == "linear":
        return dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    return dict(beta_schedule="squaredcos_cap_v2")


def run_dpm(schedule, spacing, steps, sde, gen):
    cfg = dict(num_train_timesteps=1000, solver_order=2, prediction_type="epsilon",
               algorithm_type="sde-dpmsolver++" if sde else "dpmsolver++", solver_type="midpoint",
               lower_order_final=True, final_sigmas_type="zero", timestep_spacing="linspace",
               use_karras_sigmas=spacing == "karras", use_lu_lambdas=spacing == "logsnr", **betas_config(schedule))
    sch = DPMSolverMultistepScheduler(**cfg)
    sch.set_timesteps(steps)
    # The cosine schedule's rounded timesteps repeat (999, 999, ...); without
    # a begin index diffusers would look the first one up as the second.
    sch.set_begin_index(0)
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    states, noises = [x.flatten().tolist()], []
    for i, t in enumerate(sch.timesteps):
        out = eps_model(x, sch.sigmas[i])
        noise = torch.randn(SHAPE, generator=gen, dtype=torch.float64) if sde else None
        if sde:
            noises.append(noise.flatten().tolist())
        x = sch.step(out, t, x, variance_noise=noise).prev_sample
        states.append(x.flatten().tolist())
    return sch.sigmas.double().tolist(), states, noises


def run_heun(schedule, steps, gen):
    sch = HeunDiscreteScheduler(num_train_timesteps=1000, prediction_type="epsilon", use_karras_sigmas=True,
                                **betas_config(schedule))
    sch.set_timesteps(steps)
    sch.set_begin_index(0)
    sigmas = sch.sigmas.double()
    x_vp = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    # diffusers keeps z = x / alpha = x * sqrt(1 + sigma^2).
    z = x_vp * math.sqrt(1.0 + float(sigmas[0]) ** 2)
    states, visited = [], []
    for i, t in enumerate(sch.timesteps):
        s = float(sigmas[i])
        if sch.state_in_first_order:
            states.append((z / math.sqrt(1.0 + s * s)).flatten().tolist())
            visited.append(s)
        inp = sch.scale_model_input(z, t)
        z = sch.step(eps_model(inp, s), t, z).prev_sample
    states.append(z.flatten().tolist())
    return visited + [0.0], states


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "crates/trainer/tests/data/sampler_trajectories.json")
    gen = torch.Generator().manual_seed(20)
    cases = []
    for schedule, spacing, steps, sde in [("linear", "karras", 10, False), ("linear", "logsnr", 8, False),
                                          ("linear", "uniform", 12, False), ("cosine", "karras", 7, False),
                                          ("linear", "karras", 10, True), ("cosine", "logsnr", 6, True)]:
        sigmas, states, noises = run_dpm(schedule, spacing, steps, sde, gen)
        cases.append(dict(sampler="dpm++2m-sde" if sde else "dpm++2m", schedule=schedule, spacing=spacing,
                          steps=steps, sigmas=sigmas, states=states, noise=noises))
    for schedule, steps in [("linear", 6), ("cosine", 9)]:
        sigmas, states = run_heun(schedule, steps, gen)
        cases.append(dict(sampler="heun", schedule=schedule, spacing="karras", steps=steps, sigmas=sigmas,
                          states=states, noise=[]))
    doc = dict(
        made_by="scripts/make-sampler-fixtures.py",
        versions=dict(torch=torch.__version__, diffusers=diffusers.__version__, numpy=np.__version__),
        mixture=[dict(weight=w, mean=m, std=s) for w, m, s in MIX],
        shape=list(SHAPE),
        cases=cases,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
