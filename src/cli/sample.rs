//! `diffuse sample`: images from a trained checkpoint (EMA weights by default).

use super::device::DeviceSpec;
use super::writable::check_writable;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use diffuse_trainer::checkpoint::Checkpoint;
use diffuse_trainer::diffusion::Diffusion;
use diffuse_trainer::image_grid::{save_grid, save_trajectory};
use diffuse_trainer::memory_budget::{sampling_need, MemoryBudget};
use diffuse_trainer::noise_levels::{NoiseLevels, Spacing};
use diffuse_trainer::npy::save_npy;
use diffuse_trainer::raster::ValueRange;
use diffuse_trainer::sampler::{sample, SampleSpec, Sampler, Variance};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum SamplerKind {
    Ddpm,
    Ddim,
    /// DPM-Solver++(2M): one model call a step.
    #[value(name = "dpm++2m")]
    DpmPp2m,
    /// DPM-Solver++(2M) SDE: one model call a step, fresh noise each step.
    #[value(name = "dpm++2m-sde")]
    DpmPp2mSde,
    /// Heun (EDM): 2 * steps - 1 model calls.
    Heun,
}

impl SamplerKind {
    /// Steps when `--steps` is not given: about 20 model calls for the
    /// solvers (Heun calls the model twice a step), DDIM's customary 50.
    fn default_steps(self) -> usize {
        match self {
            SamplerKind::Ddpm | SamplerKind::Ddim => 50,
            SamplerKind::DpmPp2m | SamplerKind::DpmPp2mSde => 20,
            SamplerKind::Heun => 10,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SpacingKind {
    /// Evenly spaced timesteps.
    Uniform,
    /// Evenly spaced log-SNR.
    Logsnr,
    /// Karras et al.'s sigma^(1/7) spacing.
    Karras,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum VarianceKind {
    Large,
    Small,
}

#[derive(Args)]
pub struct SampleArgs {
    /// A checkpoint file or a run directory (its newest checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// The sampler; the default is the best measured at 20 model calls
    /// (BENCHMARKS.md, issue 20).
    #[arg(long, value_enum, default_value = "dpm++2m-sde")]
    pub sampler: SamplerKind,
    /// Steps of DDIM, DPM-Solver++ and Heun (DDPM always takes all T steps)
    /// [default: 50 for ddim, 20 for dpm++2m and dpm++2m-sde, 10 for heun].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Noise levels of dpm++2m, dpm++2m-sde and heun [default: karras].
    #[arg(long, value_enum)]
    pub spacing: Option<SpacingKind>,
    /// Highest noise level of the karras and logsnr spacings: the ramp
    /// starts at the smaller of this and the schedule's top (`inf`: the
    /// schedule's top, as diffusers) [default: 160, which only a cosine
    /// schedule's 2.0e4 exceeds].
    #[arg(long)]
    pub sigma_max: Option<f64>,
    /// DDIM eta: 0 is deterministic, 1 is DDPM-like.
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// DDPM variance: large (beta_t) or small (posterior); default: the one
    /// recorded with the model (imported models), else large.
    #[arg(long, value_enum)]
    pub variance: Option<VarianceKind>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per model call (sampling runs batch by batch).
    #[arg(long, alias = "batch-size", default_value_t = 64)]
    pub batch: usize,
    /// PNG grid to write.
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    /// Also write the images as a .npy float32 array (N, C, H, W) in [0, 1].
    #[arg(long)]
    pub npy: Option<PathBuf>,
    /// Also write a PNG of x_T ... x_0 for the first few samples.
    #[arg(long)]
    pub trajectory: Option<PathBuf>,
    /// Use the raw weights instead of the EMA weights.
    #[arg(long)]
    pub no_ema: bool,
    /// Arithmetic of the convolutions and linear layers: fp32, tf32 or bf16
    /// [default: the device's, whatever the run trained at: bf16 on GPUs of
    /// compute capability 8.0+, else fp32].
    #[arg(long, value_parser = super::train::parse_precision)]
    pub precision: Option<diffuse_tensor::Precision>,
    /// Device to run on.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// Class-conditional model: the class to draw (its number or its name,
    /// e.g. 7 or cat), or `all`: --n images split evenly over the classes,
    /// one grid row per class, in class order (also in --npy).
    #[arg(long, value_name = "K|NAME|all")]
    pub class: Option<String>,
    /// Classifier-free guidance scale w: eps_uncond + w (eps_cond - eps_uncond);
    /// 0 = unconditional, 1 = conditional without guidance.
    #[arg(long, default_value_t = diffuse_trainer::guidance::DEFAULT_SCALE, requires = "class")]
    pub guidance: f64,
}

/// The labels of `n` samples for `--class`, and the grid's images per row
/// (one row per class for `all`).
fn class_labels(class: &str, n: usize, num_classes: usize, names: &[String]) -> Result<(Vec<usize>, Option<usize>)> {
    if num_classes == 0 {
        bail!("--class needs a class-conditional model; this checkpoint's model is unconditional");
    }
    if class == "all" {
        let per_class = n / num_classes;
        if per_class == 0 {
            bail!("--class all needs --n of at least one image per class ({num_classes})");
        }
        return Ok(((0..per_class * num_classes).map(|i| i / per_class).collect(), Some(per_class)));
    }
    let k = match (class.parse::<usize>(), names.iter().position(|m| m == class)) {
        (_, Some(k)) => k,
        (Ok(k), None) => k,
        (Err(_), None) => bail!("--class {class}: not a class number or one of the run's classes {names:?}"),
    };
    if k >= num_classes {
        bail!("--class {k} is outside the model's classes 0..{}", num_classes - 1);
    }
    Ok((vec![k; n], None))
}

pub fn run(a: SampleArgs) -> Result<()> {
    // Before minutes of sampling, not after.
    check_writable(&a.out, "--out")?;
    if let Some(p) = &a.npy {
        check_writable(p, "--npy")?;
    }
    if let Some(p) = &a.trajectory {
        check_writable(p, "--trajectory")?;
    }
    let device = a.device.open()?;
    let ckpt = Checkpoint::open(&a.checkpoint)?;
    if !ckpt.verified {
        println!("note: {} has no checksums (written by an older diffuse): not verified", ckpt.path.display());
    }
    if a.n == 0 || a.batch == 0 {
        bail!("--n and --batch must be at least 1");
    }
    let file_len = std::fs::metadata(&ckpt.path).map(|m| m.len()).unwrap_or(0);
    let need = sampling_need(ckpt.model_config(), file_len, a.n, a.batch, device.is_cpu())?;
    MemoryBudget::global()?.check(format!("sampling {} images", a.n), &need)?;
    let mut model = ckpt.load_model(&device, !a.no_ema)?;
    // The device's default, not the run's: a bf16 run sampled on the CPU
    // gets full fp32 arithmetic there (bf16 on the CPU gains no speed).
    model.params.set_precision(a.precision.unwrap_or_else(|| diffuse_tensor::Precision::default_for(&device)));
    let tc = &ckpt.train_config;
    let diffusion = Diffusion::new(tc.schedule, tc.timesteps, tc.target)?;
    let spacing = match a.spacing {
        None | Some(SpacingKind::Karras) => Spacing::Karras,
        Some(SpacingKind::Uniform) => Spacing::Uniform,
        Some(SpacingKind::Logsnr) => Spacing::LogSnr,
    };
    if a.spacing.is_some() && matches!(a.sampler, SamplerKind::Ddpm | SamplerKind::Ddim) {
        bail!("--spacing applies to dpm++2m, dpm++2m-sde and heun only");
    }
    if a.sigma_max.is_some()
        && (matches!(a.sampler, SamplerKind::Ddpm | SamplerKind::Ddim) || spacing == Spacing::Uniform)
    {
        bail!("--sigma-max applies to the karras and logsnr spacings of dpm++2m, dpm++2m-sde and heun only");
    }
    // a default never asks for more steps than a short diffusion has
    let steps = a.steps.unwrap_or_else(|| a.sampler.default_steps().min(tc.timesteps.saturating_sub(1).max(1)));
    let sampler = match a.sampler {
        SamplerKind::Ddpm => Sampler::Ddpm {
            variance: match a.variance {
                Some(VarianceKind::Large) => Variance::FixedLarge,
                Some(VarianceKind::Small) => Variance::FixedSmall,
                None => ckpt.sample_variance.unwrap_or(Variance::FixedLarge),
            },
        },
        SamplerKind::Ddim => Sampler::Ddim { steps, eta: a.eta },
        SamplerKind::DpmPp2m => Sampler::DpmSolver { steps, spacing, sde: false },
        SamplerKind::DpmPp2mSde => Sampler::DpmSolver { steps, spacing, sde: true },
        SamplerKind::Heun => Sampler::Heun { steps, spacing },
    };
    let calls = sampler.model_calls(&diffusion)?;
    if let Some(sigma_max) = a.sigma_max {
        NoiseLevels::new(&diffusion).sigmas_up_to(spacing, steps, sigma_max).context("--sigma-max")?;
    }
    let mut n = a.n;
    let mut per_row = None;
    let labels = match &a.class {
        Some(c) => {
            let (labels, row) = class_labels(c, a.n, model.config.num_classes, &tc.class_names)?;
            n = labels.len();
            per_row = row;
            Some(labels)
        }
        None => None,
    };
    let mut spec = SampleSpec::new(n, sampler, a.seed);
    spec.batch = a.batch;
    spec.labels = labels;
    spec.guidance = a.guidance;
    if let Some(sigma_max) = a.sigma_max {
        spec.sigma_max = sigma_max;
    }
    if a.trajectory.is_some() {
        spec.trajectory = a.n.min(8);
    }
    let what = match &a.class {
        Some(c) => format!(" of class {c} (guidance {})", a.guidance),
        None => String::new(),
    };
    println!(
        "sampling {n} images{what} from {} (step {}) on {device}, {calls} model calls per batch",
        ckpt.path.display(),
        ckpt.state.step
    );
    let bar = std::io::stdout().is_terminal().then(|| {
        let b = ProgressBar::new(1);
        b.set_style(
            ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} {elapsed_precise}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let s = sample(&model, &diffusion, &spec, |done, total| {
        if let Some(b) = &bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let shape: [usize; 4] = s.images.dims().try_into().context("samples are not 4-D")?;
    let data = s.images.to_vec_f32()?;
    let nrow = per_row.unwrap_or((n as f64).sqrt().ceil() as usize);
    save_grid(&a.out, &data, shape, nrow, ValueRange::Signed)?;
    println!("wrote {}", a.out.display());
    if let Some(p) = &a.npy {
        let unit: Vec<f32> = data.iter().map(|&x| ((x + 1.0) * 0.5).clamp(0.0, 1.0)).collect();
        save_npy(p, &unit, &shape)?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &a.trajectory {
        let frames: Vec<Vec<f32>> = s.trajectory.iter().map(|t| t.to_vec_f32()).collect::<Result<_, _>>()?;
        let refs: Vec<&[f32]> = frames.iter().map(Vec::as_slice).collect();
        let tshape: [usize; 4] =
            s.trajectory.first().map(|t| t.dims().try_into()).transpose()?.context("empty trajectory")?;
        save_trajectory(p, &refs, tshape, ValueRange::Signed)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}
