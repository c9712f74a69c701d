//! `diffuse export --to diffusers CKPT --out DIR`: a checkpoint as a
//! Hugging Face diffusers UNet2DModel folder (config.json,
//! diffusion_pytorch_model.safetensors, scheduler_config.json).

use anyhow::Result;
use clap::{Args, ValueEnum};
use diffuse_trainer::checkpoint::Checkpoint;
use diffuse_trainer::diffusers;
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// UNet2DModel.from_pretrained(DIR) and DDPMScheduler.from_pretrained(DIR) load the folder.
    Diffusers,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The format to write.
    #[arg(long, value_enum)]
    pub to: ExportFormat,
    /// A checkpoint file or a run directory (its newest checkpoint).
    pub checkpoint: PathBuf,
    /// Folder to write (created if needed; the three files are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Export the raw weights instead of the EMA weights.
    #[arg(long)]
    pub no_ema: bool,
}

pub fn run(a: ExportArgs) -> Result<()> {
    match a.to {
        ExportFormat::Diffusers => {}
    }
    let ckpt = Checkpoint::open(&a.checkpoint)?;
    diffusers::export(&ckpt, !a.no_ema, &a.out)?;
    let which = if a.no_ema { "raw" } else { "EMA" };
    println!("wrote {} ({which} weights of {}, step {})", a.out.display(), ckpt.path.display(), ckpt.state.step);
    Ok(())
}
