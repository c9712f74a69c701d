//! `diffuse verify-step FILE`: one training step against a PyTorch test-vector file.

use super::device::DeviceSpec;
use anyhow::{bail, Context, Result};
use clap::Args;
use diffuse_tensor::{DType, Precision};
use diffuse_unet::verify::{step_tolerance, verify_step_with};
use std::path::PathBuf;

#[derive(Args)]
pub struct VerifyArgs {
    /// A safetensors file as written by ../shared/reference/make_vectors.py.
    pub file: PathBuf,
    /// Device to run on.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Arithmetic of the convolutions and linear layers (fp32, tf32, bf16).
    #[arg(long, default_value = "fp32", value_parser = super::train::parse_precision)]
    pub precision: Precision,
    /// Largest relative error accepted [default: 1e-4 for fp32, 32 unit
    /// roundoffs of the rounded GEMM inputs for tf32 (1.6e-2) and bf16 (0.125)].
    #[arg(long)]
    pub tolerance: Option<f64>,
}

pub fn run(a: VerifyArgs) -> Result<()> {
    let device = a.device.open()?;
    let bytes = std::fs::read(&a.file).with_context(|| format!("{}", a.file.display()))?;
    let e =
        verify_step_with(&bytes, &device, DType::F32, a.precision).with_context(|| format!("{}", a.file.display()))?;
    let tolerance = a.tolerance.unwrap_or_else(|| step_tolerance(a.precision));
    let line = serde_json::json!({
        "file": a.file.display().to_string(),
        "device": device.to_string(),
        "precision": a.precision.to_string(),
        "tolerance": tolerance,
        "params": e.params,
        "output_rel_err": e.output,
        "loss_rel_err": e.loss,
        "worst_grad_rel_err": e.worst_grad,
        "worst_grad": e.worst_grad_name,
        "pass": e.max() <= tolerance,
    });
    println!("{line}");
    if e.max() > tolerance {
        bail!("relative error {:.3e} is above {:.1e}", e.max(), tolerance);
    }
    Ok(())
}
