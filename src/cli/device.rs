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

// TEMP until the CUDA and emulator drivers land.
fn cuda(_ordinal: usize) -> Result<Device> {
    bail!("CUDA support is not built yet")
}

fn emu() -> Result<Device> {
    bail!("the CUDA emulator is not built yet")
}

pub fn cuda_probe() -> String {
    "not built yet".into()
}

pub fn emu_probe() -> String {
    "not built yet".into()
}
