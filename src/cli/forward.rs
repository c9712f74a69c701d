//! `diffuse forward` (hidden, for interop checks): one model call on inputs
//! from a safetensors file (`x` [N, C, H, W], `t` [N]), the output written
//! as `out` to another, so that scripts can compare with other frameworks.

use anyhow::{Context, Result};
use clap::Args;
use diffuse_tensor::{DType, Device};
use diffuse_trainer::checkpoint::Checkpoint;
use diffuse_unet::atomic_file::write_atomic;
use diffuse_unet::io::{parse, read_file, serialize, tensor_bytes, view_to_tensor};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args)]
pub struct ForwardArgs {
    /// A checkpoint file or a run directory (its newest checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// safetensors file with `x` and `t`.
    #[arg(long)]
    pub input: PathBuf,
    /// safetensors file to write `out` (float32) to.
    #[arg(long)]
    pub out: PathBuf,
    /// Use the raw weights instead of the EMA weights.
    #[arg(long)]
    pub no_ema: bool,
    /// Compute in float64 on the CPU (the output is still written as float32).
    #[arg(long)]
    pub f64: bool,
}

pub fn run(a: ForwardArgs) -> Result<()> {
    let ckpt = Checkpoint::open(&a.checkpoint)?;
    let mut model = ckpt.load_model(&Device::Cpu, !a.no_ema)?;
    let dtype = if a.f64 { DType::F64 } else { DType::F32 };
    model.params.convert(dtype, &Device::Cpu)?;
    let bytes = read_file(&a.input)?;
    let st = parse(&bytes)?;
    let get = |name: &str| -> Result<_> {
        let view = st.tensor(name).with_context(|| format!("{}: no tensor {name:?}", a.input.display()))?;
        Ok(view_to_tensor(name, &view)?.to_dtype(dtype)?)
    };
    let out = model.forward(&get("x")?, &get("t")?)?.to_dtype(DType::F32)?;
    let entries = vec![("out".to_string(), out.dims().to_vec(), tensor_bytes(&out)?)];
    write_atomic(&a.out, &serialize(&entries, HashMap::new())?)?;
    println!("wrote {}", a.out.display());
    Ok(())
}
