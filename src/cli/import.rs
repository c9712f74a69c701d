//! `diffuse import --from diffusers DIR --out CKPT`: a Hugging Face
//! diffusers UNet2DModel folder as a `diffuse` checkpoint (step 0, the
//! weights as both raw and EMA weights), ready for sample, eval and
//! `train --init-from`.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use diffuse_trainer::diffusers;
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum ImportFormat {
    /// A UNet2DModel folder: config.json, diffusion_pytorch_model.safetensors, optional scheduler_config.json.
    Diffusers,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The format of DIR.
    #[arg(long, value_enum)]
    pub from: ImportFormat,
    /// The model folder (or a pipeline folder with unet/ and scheduler/).
    pub dir: PathBuf,
    /// Checkpoint file to write (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: ImportArgs) -> Result<()> {
    match a.from {
        ImportFormat::Diffusers => {}
    }
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let imported = diffusers::import(&a.dir, &a.out)?;
    let (m, s) = (&imported.model, &imported.scheduler);
    println!("model: {} parameters, {}", m.num_params(), serde_json::to_string(&m.config)?);
    let variance = match s.variance {
        Some(diffuse_trainer::sampler::Variance::FixedSmall) => "small",
        Some(diffuse_trainer::sampler::Variance::FixedLarge) => "large",
        None => "not given",
    };
    println!(
        "diffusion: {:?} schedule, {} steps, target {:?}, DDPM variance {variance}",
        s.schedule, s.timesteps, s.target
    );
    for n in &imported.notes {
        println!("note: {n}");
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
