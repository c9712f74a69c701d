//! `diffuse inpaint`: fill the masked region of images with RePaint
//! (Lugmayr et al. 2022). The mask is a picture (white = region to fill,
//! the input's size) or a built-in shape. Each output shows
//! input | mask (the region to fill grey over the input) | result.

use super::image_verbs::{
    by_batches, load_inputs, overview_png, panels_png, InputArgs, Model, ModelArgs, OutPlan, StepBar, OVERVIEW_IMAGES,
};
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use diffuse_trainer::raster::{load_image, Resize};
use diffuse_trainer::restore::inpaint::{inpaint, model_calls, repaint_schedule, RepaintSpec};
use diffuse_trainer::restore::masks::{check_mask, make_mask, mask_from_unit_image, MaskShape};
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum MaskShapeArg {
    /// The centre square of half the side.
    Box,
    /// The bottom half.
    Half,
    /// A few thick random strokes (seeded by --seed).
    Strokes,
}

#[derive(Args)]
pub struct InpaintArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Mask picture of the input's size: white (>= 50% grey) marks the region to fill.
    #[arg(long, required_unless_present = "mask_shape", conflicts_with = "mask_shape")]
    pub mask: Option<PathBuf>,
    /// A built-in mask instead of a picture.
    #[arg(long, value_enum)]
    pub mask_shape: Option<MaskShapeArg>,
    /// Timesteps of the RePaint chain (default: min(250, T), the paper's 250).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Resampling jump length j (default: the paper's 10, scaled by steps/250).
    #[arg(long)]
    pub jump_length: Option<usize>,
    /// Times each stretch is run, r (the paper's 10; 1 = no resampling).
    #[arg(long)]
    pub jump_count: Option<usize>,
    /// Output: a .png for one image, else a folder (one PNG per image, overview.png).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: InpaintArgs) -> Result<()> {
    let m = Model::load(&a.model)?;
    let d = &m.diffusion;
    let mut spec = RepaintSpec::defaults_for(d.timesteps, a.model.seed);
    if let Some(s) = a.steps {
        if s == 0 || s > d.timesteps {
            bail!("--steps must be in 1..={} (the model's timesteps), got {s}", d.timesteps);
        }
        spec = RepaintSpec { steps: s, ..RepaintSpec::defaults_for(s, a.model.seed) };
    }
    spec.jump_length = a.jump_length.unwrap_or(spec.jump_length);
    spec.jump_count = a.jump_count.unwrap_or(spec.jump_count);
    let calls = model_calls(&repaint_schedule(spec.steps, spec.jump_length, spec.jump_count)?);
    let dims = m.image_dims();
    let [_, size, _] = dims;
    let inputs = load_inputs(&a.inputs, dims)?;
    let fill = match (&a.mask, a.mask_shape) {
        (Some(path), _) => {
            let img = load_image(path, 1, size, Resize::Nearest)?;
            for (name, &[w, h]) in inputs.names.iter().zip(&inputs.sizes) {
                if [img.width, img.height] != [w, h] {
                    bail!(
                        "{}: the mask is {}x{} but the input {name} is {w}x{h}; they must be the same size",
                        path.display(),
                        img.width,
                        img.height
                    );
                }
            }
            let unit: Vec<f32> = img.values.iter().map(|&v| (v + 1.0) * 0.5).collect();
            mask_from_unit_image(&unit).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        (None, Some(shape)) => {
            let shape = match shape {
                MaskShapeArg::Box => MaskShape::Box,
                MaskShapeArg::Half => MaskShape::Half,
                MaskShapeArg::Strokes => MaskShape::Strokes,
            };
            let mask = make_mask(shape, size, size, a.model.seed);
            check_mask(&mask)?;
            mask
        }
        (None, None) => bail!("give a mask: --mask PICTURE or --mask-shape box|half|strokes"),
    };
    let plan = OutPlan::new(&a.out, inputs.len())?;
    println!("inpainting {} image(s) with {}", inputs.len(), m.describe(!a.model.no_ema));
    println!(
        "RePaint: {} steps, jumps of {} run {} times: {calls} model calls per batch; {} of {} pixels to fill",
        spec.steps,
        spec.jump_length,
        spec.jump_count,
        fill.iter().filter(|&&f| f).count(),
        fill.len()
    );
    let bar = StepBar::new();
    let result = by_batches(&inputs.values, dims, a.model.batch, &m.device, |x, first| {
        let spec = RepaintSpec { seed: spec.seed.wrapping_add(first as u64), ..spec };
        Ok(inpaint(&m.unet, d, x, &fill, &spec, |i, n| bar.update(i, n))?)
    })?;
    bar.finish();

    let per = inputs.per_image();
    let plane = size * size;
    // The mask panel: the input with the region to fill shown mid-grey.
    let masked: Vec<f32> =
        inputs.values.iter().enumerate().map(|(i, &v)| if fill[i % plane] { 0.0 } else { v }).collect();
    plan.prepare()?;
    let panels = |i: usize| -> Vec<&[f32]> {
        vec![inputs.image(i), &masked[i * per..(i + 1) * per], &result[i * per..(i + 1) * per]]
    };
    for (i, name) in inputs.names.iter().enumerate() {
        panels_png(&plan.image_path(name), &panels(i), dims)?;
    }
    if inputs.len() > 1 {
        let rows: Vec<Vec<&[f32]>> = (0..inputs.len().min(OVERVIEW_IMAGES)).map(panels).collect();
        overview_png(&plan.side_path("overview.png"), &rows, dims)?;
    }
    match &plan {
        OutPlan::File(p) => println!("wrote {} (input | mask | result)", p.display()),
        OutPlan::Dir(dir) => {
            println!("wrote {} PNG(s) (input | mask | result) and overview.png to {}", inputs.len(), dir.display())
        }
    }
    Ok(())
}
