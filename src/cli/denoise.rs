//! `diffuse denoise`: a noisy image is taken as x_t at the timestep with its
//! noise level (`--sigma`, pixel units in [0, 1]; or `--t`) and the reverse
//! process runs to x_0. With `--add-noise S` a clean input first gets seeded
//! Gaussian noise of deviation S; then each output shows original | noisy |
//! denoised, and PSNR/SSIM of the noisy image, of a Gaussian filter (its
//! width the best for these images) and of the model are printed and
//! written as JSON (per image and their means).

use super::image_verbs::{
    by_batches, load_inputs, overview_png, panels_png, to_unit, write_json, InputArgs, Model, ModelArgs, OutPlan,
    SamplerArgs, StepBar, OVERVIEW_IMAGES,
};
use anyhow::{bail, Result};
use clap::Args;
use diffuse_tensor::ops;
use diffuse_trainer::metrics::{psnr_per_image, ssim_per_image, SsimOptions};
use diffuse_trainer::restore::baseline::best_gaussian;
use diffuse_trainer::restore::denoise::{add_pixel_noise, denoise};
use diffuse_trainer::restore::noise_level::{sigma_of_timestep, timestep_for_sigma};
use diffuse_trainer::sampler::timesteps_from;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct DenoiseArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Noise level of the input: standard deviation in [0, 1] pixel units (default: --add-noise's).
    #[arg(long, conflicts_with = "t", allow_negative_numbers = true)]
    pub sigma: Option<f64>,
    /// Noise level of the input as a timestep of the model (0..T).
    #[arg(long)]
    pub t: Option<usize>,
    /// First add Gaussian noise of this deviation (pixel units) to the clean input, and score the result.
    #[arg(long, allow_negative_numbers = true)]
    pub add_noise: Option<f64>,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Output: a .png for one image, else a folder (one PNG per image, overview.png, metrics.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Where to write the JSON (default: next to the output).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Mean of finite values (a perfect PSNR is +inf; it is left out).
fn mean(v: &[f64]) -> f64 {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    f.iter().sum::<f64>() / f.len().max(1) as f64
}

struct Scores {
    psnr: Vec<f64>,
    ssim: Vec<f64>,
}

impl Scores {
    fn of(est: &[f32], clean: &[f32], shape: [usize; 4]) -> Result<Scores> {
        Ok(Scores {
            psnr: psnr_per_image(est, clean, shape, 1.0)?,
            ssim: ssim_per_image(est, clean, shape, &SsimOptions::default())?,
        })
    }
    fn at(&self, i: usize) -> serde_json::Value {
        json!({"psnr_db": self.psnr[i], "ssim": self.ssim[i]})
    }
    fn mean(&self) -> serde_json::Value {
        json!({"psnr_db": mean(&self.psnr), "ssim": mean(&self.ssim)})
    }
}

pub fn run(a: DenoiseArgs) -> Result<()> {
    for (flag, v) in [("--sigma", a.sigma), ("--add-noise", a.add_noise)] {
        if let Some(s) = v {
            if !(s.is_finite() && s > 0.0 && s <= 1.0) {
                bail!("{flag} must be in (0, 1] (pixel units), got {s}");
            }
        }
    }
    let m = Model::load(&a.model)?;
    let d = &m.diffusion;
    let t = match (a.t, a.sigma.or(a.add_noise)) {
        (Some(t), _) if t >= d.timesteps => bail!("--t {t} is outside the model's timesteps 0..{}", d.timesteps),
        (Some(t), _) => t,
        (None, Some(s)) => timestep_for_sigma(d, s)?,
        (None, None) => {
            bail!("say how noisy the input is: --sigma S (pixel units) or --t T, or add noise with --add-noise S")
        }
    };
    let sampler = a.sampler.sampler();
    let calls = timesteps_from(d, sampler, t)?.len();
    let dims = m.image_dims();
    let inputs = load_inputs(&a.inputs, dims)?;
    let plan = OutPlan::new(&a.out, inputs.len())?;
    let shape = inputs.shape();
    let seed = a.model.seed;
    let sigma_t = sigma_of_timestep(d, t);
    println!("denoising {} image(s) with {}", inputs.len(), m.describe(!a.model.no_ema));
    println!(
        "noise level: t = {t} (alpha-bar {:.5}, sigma {sigma_t:.4} in pixel units); {} from t: {calls} model call(s)",
        d.abar(t as isize),
        a.sampler.name()
    );
    if let Some(s) = a.sigma.or(a.add_noise) {
        if (sigma_t / s - 1.0).abs() > 0.05 {
            eprintln!("warning: sigma {s} is outside what the model's timesteps cover well; using t = {t} (sigma {sigma_t:.4})");
        }
    }
    let noisy = match a.add_noise {
        Some(s) => by_batches(&inputs.values, dims, a.model.batch, &m.device, |x, first| {
            Ok(add_pixel_noise(x, s, seed, first as u32)?)
        })?,
        None => inputs.values.clone(),
    };
    let bar = StepBar::new();
    let denoised = by_batches(&noisy, dims, a.model.batch, &m.device, |x, _| {
        let y = denoise(&m.unet, d, x, t, sampler, seed, |i, n| bar.update(i, n))?;
        Ok(ops::clamp(&y, -1.0, 1.0)?)
    })?;
    bar.finish();

    let mut report = json!({
        "checkpoint": m.checkpoint.path.display().to_string(),
        "checkpoint_step": m.checkpoint.state.step,
        "ema": !a.model.no_ema,
        "t": t,
        "alpha_bar": d.abar(t as isize),
        "sigma_of_t": sigma_t,
        "sigma": a.sigma.or(a.add_noise),
        "added_noise": a.add_noise,
        "sampler": a.sampler.name(),
        "model_calls": calls,
        "seed": seed,
    });
    let per = inputs.per_image();
    if a.add_noise.is_some() {
        let clean = to_unit(&inputs.values);
        let noisy_unit = to_unit(&noisy);
        let (gauss_sigma, gauss) = best_gaussian(&noisy_unit, &clean, shape)?;
        let clipped: Vec<f32> = noisy_unit.iter().map(|v| v.clamp(0.0, 1.0)).collect();
        let scores = [
            ("noisy", Scores::of(&noisy_unit, &clean, shape)?),
            ("noisy_clipped", Scores::of(&clipped, &clean, shape)?),
            ("gaussian", Scores::of(&gauss, &clean, shape)?),
            ("model", Scores::of(&to_unit(&denoised), &clean, shape)?),
        ];
        report["baseline"] = json!({
            "method": "Gaussian filter, reflect borders",
            "sigma_px": gauss_sigma,
            "chosen_by": "grid search for the best mean PSNR on these very images",
        });
        report["images"] = inputs
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut o = json!({"name": name, "output": plan.image_path(name).display().to_string()});
                for (k, s) in &scores {
                    o[*k] = s.at(i);
                }
                o
            })
            .collect();
        let mut means = json!({});
        for (k, s) in &scores {
            means[*k] = s.mean();
        }
        report["mean"] = means;
        println!("{:<28} {:>8} {:>7}   ({} image(s), mean per image)", "", "PSNR dB", "SSIM", inputs.len());
        for (k, s) in &scores {
            let label = match *k {
                "gaussian" => format!("gaussian filter (sigma {gauss_sigma})"),
                "model" => format!("model ({})", a.sampler.name()),
                "noisy_clipped" => "noisy, clipped to [0, 1]".to_string(),
                _ => "noisy".to_string(),
            };
            println!("{label:<28} {:>8.2} {:>7.4}", mean(&s.psnr), mean(&s.ssim));
        }
    }

    plan.prepare()?;
    let panels = |i: usize| -> Vec<&[f32]> {
        let (x, y, z) = (inputs.image(i), &noisy[i * per..(i + 1) * per], &denoised[i * per..(i + 1) * per]);
        if a.add_noise.is_some() {
            vec![x, y, z]
        } else {
            vec![y, z]
        }
    };
    for (i, name) in inputs.names.iter().enumerate() {
        panels_png(&plan.image_path(name), &panels(i), dims)?;
    }
    if inputs.len() > 1 {
        let rows: Vec<Vec<&[f32]>> = (0..inputs.len().min(OVERVIEW_IMAGES)).map(panels).collect();
        overview_png(&plan.side_path("overview.png"), &rows, dims)?;
    }
    let json_path = a.json.clone().unwrap_or_else(|| plan.side_path("metrics.json"));
    write_json(&json_path, &report)?;
    let layout = if a.add_noise.is_some() { "original | noisy | denoised" } else { "input | denoised" };
    match &plan {
        OutPlan::File(p) => println!("wrote {} ({layout}) and {}", p.display(), json_path.display()),
        OutPlan::Dir(dir) => println!(
            "wrote {} PNG(s) ({layout}), overview.png and {} to {}",
            inputs.len(),
            json_path.display(),
            dir.display()
        ),
    }
    Ok(())
}
