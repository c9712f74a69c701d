//! `diffuse verify-step FILE`: one training step against a PyTorch test-vector file.

use super::device::DeviceSpec;
use anyhow::{bail, Context, Result};
use clap::Args;
use diffuse_tensor::DType;
use diffuse_unet::verify::verify_step;
use std::path::PathBuf;

#[derive(Args)]
pub struct VerifyArgs {
    /// A safetensors file as written by ../shared/reference/make_vectors.py.
    pub file: PathBuf,
    /// Device to run on.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Largest relative error accepted.
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f64,
}

pub fn run(a: VerifyArgs) -> Result<()> {
    let device = a.device.open()?;
    let bytes = std::fs::read(&a.file).with_context(|| format!("{}", a.file.display()))?;
    let e = verify_step(&bytes, &device, DType::F32).with_context(|| format!("{}", a.file.display()))?;
    let line = serde_json::json!({
        "file": a.file.display().to_string(),
        "device": device.to_string(),
        "params": e.params,
        "output_rel_err": e.output,
        "loss_rel_err": e.loss,
        "worst_grad_rel_err": e.worst_grad,
        "worst_grad": e.worst_grad_name,
        "pass": e.max() <= a.tolerance,
    });
    println!("{line}");
    if e.max() > a.tolerance {
        bail!("relative error {:.3e} is above {:.0e}", e.max(), a.tolerance);
    }
    Ok(())
}
