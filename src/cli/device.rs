//! `--device auto|cpu|cuda[:N]|emu`.

use anyhow::{bail, Result};
use diffuse_tensor::Device;

pub fn parse(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(cuda(0).unwrap_or(Device::Cpu)),
        "emu" => emu(),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| anyhow::anyhow!("bad device {s:?}: expected cuda:N"))?,
                None => 0,
            };
            cuda(ordinal)
        }
        other => bail!("unknown device {other:?}: expected auto, cpu, cuda[:N] or emu"),
    }
}

fn cuda(ordinal: usize) -> Result<Device> {
    Ok(diffuse_tensor::gpu::cuda::cuda_device(ordinal)?)
}

fn emu() -> Result<Device> {
    Ok(diffuse_tensor::gpu::emu::emu_device()?)
}

pub fn cuda_probe() -> String {
    diffuse_tensor::gpu::cuda::cuda_probe()
}

pub fn emu_probe() -> String {
    diffuse_tensor::gpu::emu::emu_probe()
}
