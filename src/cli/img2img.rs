//! `diffuse img2img`: SDEdit (Meng et al. 2022): the input is noised to
//! t = s T with the forward process and the reverse process (DDPM or DDIM)
//! brings it back; small s keeps the picture, large s keeps only its rough
//! layout. Each output shows input | result.

use super::image_verbs::{
    by_batches, load_inputs, overview_png, panels_png, InputArgs, Model, ModelArgs, OutPlan, SamplerArgs, StepBar,
    OVERVIEW_IMAGES,
};
use anyhow::{bail, Result};
use clap::Args;
use diffuse_tensor::ops;
use diffuse_trainer::restore::img2img::{img2img, start_timestep};
use diffuse_trainer::sampler::timesteps_from;
use std::path::PathBuf;

#[derive(Args)]
pub struct Img2ImgArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// How far to noise the input: t = strength x T, strength in [0, 1].
    #[arg(long, allow_negative_numbers = true)]
    pub strength: f64,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Output: a .png for one image, else a folder (one PNG per image, overview.png).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: Img2ImgArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&a.strength) {
        bail!("--strength must be in [0, 1], got {}", a.strength);
    }
    let m = Model::load(&a.model)?;
    let d = &m.diffusion;
    let sampler = a.sampler.sampler();
    let start = start_timestep(a.strength, d.timesteps)?;
    let calls = match start {
        Some(t) => timesteps_from(d, sampler, t)?.len(),
        None => 0,
    };
    let dims = m.image_dims();
    let inputs = load_inputs(&a.inputs, dims)?;
    let plan = OutPlan::new(&a.out, inputs.len())?;
    println!("img2img of {} image(s) with {}", inputs.len(), m.describe(!a.model.no_ema));
    match start {
        Some(t) => {
            println!("SDEdit: noise to t = {t} of {}, then {}: {calls} model call(s)", d.timesteps, a.sampler.name())
        }
        None => println!("strength {}: no step to take, the output is the input", a.strength),
    }
    let bar = StepBar::new();
    let result = by_batches(&inputs.values, dims, a.model.batch, &m.device, |x, first| {
        let seed = a.model.seed.wrapping_add(first as u64);
        let y = img2img(&m.unet, d, x, a.strength, sampler, seed, |i, n| bar.update(i, n))?;
        Ok(ops::clamp(&y, -1.0, 1.0)?)
    })?;
    bar.finish();
    let per = inputs.per_image();
    plan.prepare()?;
    let panels = |i: usize| -> Vec<&[f32]> { vec![inputs.image(i), &result[i * per..(i + 1) * per]] };
    for (i, name) in inputs.names.iter().enumerate() {
        panels_png(&plan.image_path(name), &panels(i), dims)?;
    }
    if inputs.len() > 1 {
        let rows: Vec<Vec<&[f32]>> = (0..inputs.len().min(OVERVIEW_IMAGES)).map(panels).collect();
        overview_png(&plan.side_path("overview.png"), &rows, dims)?;
    }
    match &plan {
        OutPlan::File(p) => println!("wrote {} (input | result)", p.display()),
        OutPlan::Dir(dir) => {
            println!("wrote {} PNG(s) (input | result) and overview.png to {}", inputs.len(), dir.display())
        }
    }
    Ok(())
}
