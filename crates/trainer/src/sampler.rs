//! Samplers: DDPM ancestral sampling (fixed-large or fixed-small variance),
//! DDIM (any number of steps, any eta), and the noise-level samplers of
//! `solvers.rs` (DPM-Solver++(2M), its SDE variant, Heun), each with
//! optional class labels and classifier-free guidance (`guidance.rs`).
//! Noise comes from Philox through the fused noise-add op, so a seed gives
//! the same noise on every device (bit for bit on the CPU and the emulator,
//! within a few ulp on CUDA; see ARCHITECTURE.md, "Determinism across
//! devices"); images agree up to the rounding of the model's forward.

use crate::diffusion::Diffusion;
use crate::guidance::{self, Conditioning};
use crate::memory_budget::MemoryBudget;
use crate::noise_levels::{NoiseLevels, Spacing, DEFAULT_SIGMA_MAX};
use crate::solvers::{self, Denoiser, NoiseSource};
use crate::{Error, Result};
use diffuse_tensor::{ops, DType, Tensor};
use diffuse_unet::UNet;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Variance {
    /// sigma_t^2 = beta_t (the paper's choice for CIFAR-10).
    FixedLarge,
    /// sigma_t^2 = the posterior variance beta~_t.
    FixedSmall,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    Ddpm {
        variance: Variance,
    },
    Ddim {
        steps: usize,
        eta: f64,
    },
    /// DPM-Solver++(2M); `sde`: the SDE variant.
    DpmSolver {
        steps: usize,
        spacing: Spacing,
        sde: bool,
    },
    /// Heun (EDM): 2 * steps - 1 model calls.
    Heun {
        steps: usize,
        spacing: Spacing,
    },
}

impl Sampler {
    /// Model calls per image batch.
    pub fn model_calls(&self, d: &Diffusion) -> Result<usize> {
        if let Sampler::DpmSolver { steps, spacing, .. } | Sampler::Heun { steps, spacing } = *self {
            NoiseLevels::new(d).sigmas(spacing, steps)?;
        }
        Ok(match *self {
            Sampler::DpmSolver { steps, .. } => solvers::dpm_calls(steps),
            Sampler::Heun { steps, .. } => solvers::heun_calls(steps),
            _ => timesteps(d, *self)?.len(),
        })
    }

    fn per_timestep_only(&self) -> Result<()> {
        match self {
            Sampler::Ddpm { .. } | Sampler::Ddim { .. } => Ok(()),
            _ => Err(Error::Config(format!("{self:?} visits noise levels, not timesteps: use DDPM or DDIM here"))),
        }
    }
}

/// What to sample and how.
#[derive(Clone, Debug)]
pub struct SampleSpec {
    pub n: usize,
    pub sampler: Sampler,
    pub seed: u64,
    /// Images per model call.
    pub batch: usize,
    /// Record x_t of the first `trajectory` images at about this many points.
    pub trajectory: usize,
    pub trajectory_points: usize,
    /// Clip the x0 estimate to [-1, 1] at every step (as the paper's code).
    pub clip_x0: bool,
    /// The class of each of the `n` images (a conditional model), or none.
    pub labels: Option<Vec<usize>>,
    /// Classifier-free guidance scale w (1: plain conditional).
    pub guidance: f64,
    /// Top of the Karras / log-SNR ramps of DPM-Solver++ and Heun: the
    /// schedule's top level capped at this (`f64::INFINITY`: uncapped).
    pub sigma_max: f64,
}

impl SampleSpec {
    pub fn new(n: usize, sampler: Sampler, seed: u64) -> Self {
        SampleSpec {
            n,
            sampler,
            seed,
            batch: 64,
            trajectory: 0,
            trajectory_points: 10,
            clip_x0: true,
            labels: None,
            guidance: 1.0,
            sigma_max: DEFAULT_SIGMA_MAX,
        }
    }
}

/// Samples in [-1, 1], shape [N, C, H, W] on the CPU, and the trajectory:
/// one entry per recorded step, each [k, C, H, W].
pub struct Samples {
    pub images: Tensor,
    pub trajectory: Vec<Tensor>,
}

/// The timesteps a sampler visits, from noisiest to cleanest (DDPM and DDIM).
pub fn timesteps(d: &Diffusion, sampler: Sampler) -> Result<Vec<usize>> {
    match sampler {
        Sampler::DpmSolver { .. } | Sampler::Heun { .. } => sampler.per_timestep_only().map(|_| Vec::new()),
        Sampler::Ddpm { .. } => Ok((0..d.timesteps).rev().collect()),
        Sampler::Ddim { steps, eta } => {
            if steps == 0 || steps > d.timesteps {
                return Err(Error::Config(format!("DDIM steps must be in 1..={}, got {steps}", d.timesteps)));
            }
            if !(eta >= 0.0 && eta.is_finite()) {
                return Err(Error::Config(format!("DDIM eta must be >= 0, got {eta}")));
            }
            // Evenly spaced, always including t = 0 (the "trailing" spacing
            // would skip the last, cleanest step).
            let mut ts: Vec<usize> = (0..steps).map(|i| i * d.timesteps / steps).collect();
            ts.dedup();
            ts.reverse();
            Ok(ts)
        }
    }
}

/// The timesteps a sampler visits when it starts from an x_t at `t_start`
/// (SDEdit, denoising a noisy image) instead of from pure noise at T - 1,
/// noisiest first, starting at `t_start` and ending at 0 (or `[t_start]`
/// alone: one step straight to the x0 estimate). DDPM visits every step;
/// DDIM keeps the step size of a full `steps`-step run, so it takes about
/// `steps * (t_start + 1) / T` steps (at least one).
pub fn timesteps_from(d: &Diffusion, sampler: Sampler, t_start: usize) -> Result<Vec<usize>> {
    if t_start >= d.timesteps {
        return Err(Error::Config(format!("start timestep {t_start} is outside 0..{}", d.timesteps)));
    }
    let full = timesteps(d, sampler)?;
    match sampler {
        Sampler::Ddpm { .. } => Ok((0..=t_start).rev().collect()),
        Sampler::DpmSolver { .. } | Sampler::Heun { .. } => Ok(full),
        Sampler::Ddim { .. } => {
            let n = (full.len() * (t_start + 1)).div_ceil(d.timesteps).clamp(1, t_start + 1);
            if n == 1 {
                return Ok(vec![t_start]);
            }
            let mut ts: Vec<usize> = (0..n).map(|i| (i * t_start + (n - 1) / 2) / (n - 1)).collect();
            ts.dedup();
            ts.reverse();
            Ok(ts)
        }
    }
}

/// Runs the reverse process from `x_t` (at `ts[0]`) through the timesteps
/// `ts` (noisiest first) to x_0. Step i draws its noise at Philox step
/// `ts[i]` of `seed`, as [`sample`] does.
#[allow(clippy::too_many_arguments)]
pub fn reverse_from(
    model: &UNet,
    d: &Diffusion,
    sampler: Sampler,
    clip_x0: bool,
    x_t: &Tensor,
    ts: &[usize],
    seed: u64,
    mut on_step: impl FnMut(usize, usize),
) -> Result<Tensor> {
    let mut x = x_t.clone();
    for (i, &t) in ts.iter().enumerate() {
        let t_prev = ts.get(i + 1).map(|&p| p as isize).unwrap_or(-1);
        x = reverse_step(model, d, sampler, clip_x0, &x, t, t_prev, StepNoise { seed, step: t as u32 })?;
        on_step(i + 1, ts.len());
    }
    Ok(x)
}

/// Philox streams of the starting noise, of DDPM/DDIM step noise (at step
/// t) and of the DPM-Solver++ SDE noise (at the step index).
const INIT_STREAM: u32 = 7;
const STEP_STREAM: u32 = 8;
const SDE_STREAM: u32 = 15;

/// The U-Net as a [`Denoiser`]: sigma -> (fractional) timestep for the
/// network, its output -> (eps, x0) for the training target.
struct UNetDenoiser<'a, F: FnMut()> {
    model: &'a UNet,
    d: &'a Diffusion,
    levels: &'a NoiseLevels,
    clip_x0: bool,
    cond: Conditioning<'a>,
    on_call: F,
}

impl<F: FnMut()> Denoiser for UNetDenoiser<'_, F> {
    fn predict(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        let n = x.dims()[0];
        let tt = Tensor::full([n], self.levels.t_at(sigma), x.dtype(), &x.device())?;
        let out = guidance::predict(self.model, x, &tt, self.cond)?;
        let abar = 1.0 / (1.0 + sigma * sigma);
        let (mut eps, mut x0) = self.d.split_prediction_at(x, &out, abar)?;
        if self.clip_x0 {
            x0 = ops::clamp(&x0, -1.0, 1.0)?;
            eps = self.d.eps_from_x0_at(x, &x0, abar)?;
        }
        (self.on_call)();
        Ok((eps, x0))
    }
}

/// SDE noise: Philox (seed, step index) on [`SDE_STREAM`].
struct PhiloxNoise {
    seed: u64,
}

impl NoiseSource for PhiloxNoise {
    fn add_noise(&mut self, mean: &Tensor, std: f64, step: usize) -> Result<Tensor> {
        let (n, device) = (mean.dims()[0], mean.device());
        let ones = Tensor::full([n], 1.0, DType::F32, &device)?;
        let sig = Tensor::full([n], std, DType::F32, &device)?;
        Ok(ops::noise_add(mean, &ones, &sig, self.seed, step as u32, SDE_STREAM)?.x_t)
    }
}

/// One batch through a noise-level sampler from x_T, recording x before
/// every `record_every`-th step in `record` (when given).
#[allow(clippy::too_many_arguments)]
fn sample_levels(
    model: &UNet,
    d: &Diffusion,
    sampler: Sampler,
    clip_x0: bool,
    sigma_max: f64,
    x_t: &Tensor,
    seed: u64,
    cond: Conditioning<'_>,
    mut record: Option<(&mut Vec<Tensor>, usize)>,
    on_call: impl FnMut(),
) -> Result<Tensor> {
    let levels = NoiseLevels::new(d);
    let mut den = UNetDenoiser { model, d, levels: &levels, clip_x0, cond, on_call };
    let observe = |i: usize, x: &Tensor| -> Result<()> {
        if let Some((frames, every)) = record.as_mut() {
            if i.is_multiple_of(*every) {
                frames.push(x.clone());
            }
        }
        Ok(())
    };
    match sampler {
        Sampler::DpmSolver { steps, spacing, sde } => {
            let sigmas = levels.sigmas_up_to(spacing, steps, sigma_max)?;
            let mut noise = PhiloxNoise { seed };
            let src: Option<&mut dyn NoiseSource> = if sde { Some(&mut noise) } else { None };
            solvers::dpmpp_2m(&mut den, src, x_t, &sigmas, observe)
        }
        Sampler::Heun { steps, spacing } => {
            let sigmas = levels.sigmas_up_to(spacing, steps, sigma_max)?;
            solvers::heun(&mut den, x_t, &sigmas, observe)
        }
        _ => sampler.per_timestep_only().map(|_| x_t.clone()),
    }
}

pub fn sample(
    model: &UNet,
    d: &Diffusion,
    spec: &SampleSpec,
    mut on_step: impl FnMut(usize, usize),
) -> Result<Samples> {
    if spec.n == 0 || spec.batch == 0 {
        return Err(Error::Config("number of samples and batch size must be positive".into()));
    }
    let cfg = &model.config;
    let device = model.device();
    let per_timestep = matches!(spec.sampler, Sampler::Ddpm { .. } | Sampler::Ddim { .. });
    let ts = if per_timestep { timesteps(d, spec.sampler)? } else { Vec::new() };
    let calls_per_batch = spec.sampler.model_calls(d)?;
    if let Some(l) = &spec.labels {
        if l.len() != spec.n {
            return Err(Error::Config(format!("{} class labels for {} samples", l.len(), spec.n)));
        }
    }
    guidance::check(model, spec.labels.as_deref(), spec.guidance)?;
    let per_image = cfg.in_ch * cfg.image_size * cfg.image_size;
    let values = spec
        .n
        .checked_mul(per_image)
        .filter(|v| v.checked_mul(4).is_some())
        .ok_or_else(|| Error::Config(format!("{} samples of {per_image} values do not fit in memory", spec.n)))?;
    MemoryBudget::global()?.check_bytes(format!("{} samples", spec.n), values as u64 * 4)?;
    let mut images = Vec::with_capacity(values);
    let mut trajectory: Vec<Vec<f32>> = Vec::new();
    let steps = match spec.sampler {
        Sampler::DpmSolver { steps, .. } | Sampler::Heun { steps, .. } => steps,
        _ => ts.len(),
    };
    let record_every = (steps / spec.trajectory_points.max(1)).max(1);
    let total_calls = spec.n.div_ceil(spec.batch) * calls_per_batch;
    let mut calls = 0;
    for (chunk, start) in (0..spec.n).step_by(spec.batch).enumerate() {
        let b = spec.batch.min(spec.n - start);
        let shape = [b, cfg.in_ch, cfg.image_size, cfg.image_size];
        // Each chunk of `batch` images draws from its own seed, so the first
        // images are the same whatever --n is (for a fixed --batch).
        let seed = spec.seed.wrapping_add(chunk as u64);
        let mut x = Tensor::randn(shape, seed, INIT_STREAM, DType::F32, &device)?;
        let keep = if chunk == 0 { spec.trajectory.min(b) } else { 0 };
        let cond = Conditioning { labels: spec.labels.as_ref().map(|l| &l[start..start + b]), scale: spec.guidance };
        if !per_timestep {
            let mut frames = Vec::new();
            let record = (keep > 0).then_some((&mut frames, record_every));
            x = sample_levels(model, d, spec.sampler, spec.clip_x0, spec.sigma_max, &x, seed, cond, record, || {
                calls += 1;
                on_step(calls, total_calls);
            })?;
            if keep > 0 {
                for f in frames.iter().chain(std::iter::once(&x)) {
                    trajectory.push(first_images(f, keep)?);
                }
            }
            images.extend(x.to_vec_f32()?);
            continue;
        }
        for (i, &t) in ts.iter().enumerate() {
            if keep > 0 && i % record_every == 0 {
                trajectory.push(first_images(&x, keep)?);
            }
            let t_prev = ts.get(i + 1).map(|&p| p as isize).unwrap_or(-1);
            let noise = StepNoise { seed, step: t as u32 };
            x = reverse_step_guided(model, d, spec.sampler, spec.clip_x0, &x, t, t_prev, noise, cond)?;
            calls += 1;
            on_step(calls, total_calls);
        }
        if keep > 0 {
            trajectory.push(first_images(&x, keep)?);
        }
        images.extend(x.to_vec_f32()?);
    }
    let trajectory = trajectory
        .into_iter()
        .map(|v| {
            let k = spec.trajectory.min(spec.n).min(spec.batch);
            Tensor::from_vec(v, [k, cfg.in_ch, cfg.image_size, cfg.image_size])
        })
        .collect::<diffuse_tensor::Result<Vec<_>>>()?;
    Ok(Samples { images: Tensor::from_vec(images, [spec.n, cfg.in_ch, cfg.image_size, cfg.image_size])?, trajectory })
}

fn first_images(x: &Tensor, k: usize) -> Result<Vec<f32>> {
    let per = x.numel() / x.dims()[0];
    Ok(x.to_vec_f32()?[..k * per].to_vec())
}

/// Where the noise of one stochastic reverse step comes from: Philox
/// (seed, step) on the sampler's step stream. Plain sampling uses step = t;
/// callers that visit a timestep more than once (RePaint) count steps instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepNoise {
    pub seed: u64,
    pub step: u32,
}

/// One reverse step of `sampler` from x at timestep t to t_prev (-1 means to
/// the clean image). t_prev need not be t - 1 for DDIM; DDPM uses beta_t and
/// so expects t_prev = t - 1 (DDIM with eta = 1 is the DDPM posterior of any
/// sub-sequence of timesteps).
#[allow(clippy::too_many_arguments)]
pub fn reverse_step(
    model: &UNet,
    d: &Diffusion,
    sampler: Sampler,
    clip_x0: bool,
    x: &Tensor,
    t: usize,
    t_prev: isize,
    noise: StepNoise,
) -> Result<Tensor> {
    reverse_step_guided(model, d, sampler, clip_x0, x, t, t_prev, noise, Conditioning::NONE)
}

/// [`reverse_step`] with class labels and classifier-free guidance.
#[allow(clippy::too_many_arguments)]
pub fn reverse_step_guided(
    model: &UNet,
    d: &Diffusion,
    sampler: Sampler,
    clip_x0: bool,
    x: &Tensor,
    t: usize,
    t_prev: isize,
    noise: StepNoise,
    cond: Conditioning<'_>,
) -> Result<Tensor> {
    sampler.per_timestep_only()?;
    let device = x.device();
    let n = x.dims()[0];
    let tt = Tensor::full([n], t as f64, DType::F32, &device)?;
    let out = guidance::predict(model, x, &tt, cond)?;
    let (mut eps, mut x0) = d.split_prediction(x, &out, t)?;
    if clip_x0 {
        x0 = ops::clamp(&x0, -1.0, 1.0)?;
        eps = d.eps_from_x0(x, &x0, t)?;
    }
    let abar_t = d.abar(t as isize);
    let abar_prev = d.abar(t_prev);
    let (mean, sigma) = match sampler {
        Sampler::Ddpm { variance } => {
            let beta = d.beta(t);
            let c_x0 = beta * abar_prev.sqrt() / (1.0 - abar_t);
            let c_xt = (1.0 - abar_prev) * (1.0 - beta).sqrt() / (1.0 - abar_t);
            let mean = ops::add_scaled(&ops::scale(&x0, c_x0)?, x, c_xt)?;
            let posterior = |t: usize| d.beta(t) * (1.0 - d.abar(t as isize - 1)) / (1.0 - d.abar(t as isize));
            let var = match variance {
                Variance::FixedSmall => posterior(t),
                // The paper's code uses beta~_1 in place of beta_0 for t = 0.
                Variance::FixedLarge => {
                    if t == 0 {
                        posterior(1.min(d.timesteps - 1))
                    } else {
                        beta
                    }
                }
            };
            (mean, if t == 0 { 0.0 } else { var.sqrt() })
        }
        Sampler::Ddim { eta, .. } => {
            let sigma = if t_prev < 0 {
                0.0
            } else {
                eta * ((1.0 - abar_prev) / (1.0 - abar_t)).sqrt() * (1.0 - abar_t / abar_prev).sqrt()
            };
            let c_eps = (1.0 - abar_prev - sigma * sigma).max(0.0).sqrt();
            let mean = ops::add_scaled(&ops::scale(&x0, abar_prev.sqrt())?, &eps, c_eps)?;
            (mean, sigma)
        }
        Sampler::DpmSolver { .. } | Sampler::Heun { .. } => return Err(Error::Config("not a timestep sampler".into())),
    };
    if sigma == 0.0 {
        return Ok(mean);
    }
    let ones = Tensor::full([n], 1.0, DType::F32, &device)?;
    let sig = Tensor::full([n], sigma, DType::F32, &device)?;
    Ok(ops::noise_add(&mean, &ones, &sig, noise.seed, noise.step, STEP_STREAM)?.x_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::{Schedule, Target};
    use diffuse_tensor::Device;
    use diffuse_unet::UNetConfig;

    #[test]
    fn timesteps_from_start_at_t_and_end_at_zero() {
        let d = Diffusion::new(Schedule::Linear, 1000, Target::Eps).unwrap();
        assert_eq!(
            timesteps_from(&d, Sampler::Ddpm { variance: Variance::FixedSmall }, 4).unwrap(),
            vec![4, 3, 2, 1, 0]
        );
        let ddim = Sampler::Ddim { steps: 50, eta: 0.0 };
        for t in [0, 7, 19, 20, 21, 499, 999] {
            let ts = timesteps_from(&d, ddim, t).unwrap();
            assert!(ts[0] == t && (*ts.last().unwrap() == 0 || ts == [t]), "t = {t}: {ts:?}");
            assert!(ts.windows(2).all(|p| p[0] > p[1]));
            // The step size of a full 50-step run (20), give or take one step.
            assert!(ts.len().abs_diff((t + 1).div_ceil(20)) <= 1 || t == 0, "t = {t}: {ts:?}");
        }
        assert_eq!(timesteps_from(&d, ddim, 0).unwrap(), vec![0]);
        assert!(timesteps_from(&d, ddim, 1000).is_err());
    }

    #[test]
    fn unet_denoiser_predictions_are_consistent_for_every_target() {
        let dev = Device::Cpu;
        let model = UNet::new(UNetConfig::tiny(), 2, DType::F64, &dev).unwrap();
        let x = Tensor::randn([2, 1, 8, 8], 4, 0, DType::F64, &dev).unwrap();
        for target in [Target::Eps, Target::X0, Target::V] {
            let d = Diffusion::new(Schedule::Cosine, 40, target).unwrap();
            let levels = NoiseLevels::new(&d);
            let mut calls = 0;
            let mut den = UNetDenoiser {
                model: &model,
                d: &d,
                levels: &levels,
                clip_x0: false,
                cond: Conditioning::NONE,
                on_call: || calls += 1,
            };
            // Between integer timesteps, and at one.
            for sigma in [levels.sigma_at(17.3), levels.sigma_at(5.0)] {
                let (eps, x0) = den.predict(&x, sigma).unwrap();
                let a = crate::noise_levels::alpha_of(sigma);
                let (e, z, xv) = (eps.to_vec_f64().unwrap(), x0.to_vec_f64().unwrap(), x.to_vec_f64().unwrap());
                for i in 0..xv.len() {
                    assert!((a * (z[i] + sigma * e[i]) - xv[i]).abs() < 1e-9, "{target:?} sigma {sigma}");
                }
            }
            assert_eq!(calls, 2);
        }
    }

    #[test]
    fn level_samplers_repeat_bit_for_bit_and_the_sde_depends_on_the_seed() {
        let dev = Device::Cpu;
        let model = UNet::new(UNetConfig::tiny(), 2, DType::F32, &dev).unwrap();
        for target in [Target::Eps, Target::X0, Target::V] {
            let d = Diffusion::new(Schedule::Linear, 30, target).unwrap();
            for sampler in [
                Sampler::DpmSolver { steps: 5, spacing: Spacing::Karras, sde: false },
                Sampler::DpmSolver { steps: 4, spacing: Spacing::LogSnr, sde: true },
                Sampler::Heun { steps: 3, spacing: Spacing::Uniform },
            ] {
                let mut spec = SampleSpec::new(3, sampler, 9);
                spec.batch = 2;
                spec.trajectory = 2;
                let mut seen = 0;
                let a = sample(&model, &d, &spec, |done, total| {
                    seen = done;
                    assert_eq!(total, 2 * sampler.model_calls(&d).unwrap());
                })
                .unwrap();
                assert_eq!(seen, 2 * sampler.model_calls(&d).unwrap());
                let b = sample(&model, &d, &spec, |_, _| {}).unwrap();
                let v = a.images.to_vec_f32().unwrap();
                assert!(v.iter().all(|x| x.is_finite()));
                assert_eq!(v, b.images.to_vec_f32().unwrap(), "{sampler:?}");
                assert!(a.trajectory.len() >= 2 && a.trajectory[0].dims() == [2, 1, 8, 8]);
                let c = sample(&model, &d, &SampleSpec { seed: 10, ..spec.clone() }, |_, _| {}).unwrap();
                assert_ne!(v, c.images.to_vec_f32().unwrap());
                if matches!(sampler, Sampler::DpmSolver { sde: true, .. }) {
                    // Same start, other step noise: only the SDE noise differs.
                    let x_t = Tensor::randn([2, 1, 8, 8], 9, INIT_STREAM, DType::F32, &dev).unwrap();
                    let run = |seed| {
                        sample_levels(
                            &model,
                            &d,
                            sampler,
                            true,
                            f64::INFINITY,
                            &x_t,
                            seed,
                            Conditioning::NONE,
                            None,
                            || {},
                        )
                        .unwrap()
                    };
                    assert_ne!(run(1).to_vec_f32().unwrap(), run(2).to_vec_f32().unwrap());
                }
            }
        }
        let d = Diffusion::new(Schedule::Linear, 30, Target::Eps).unwrap();
        let bad = Sampler::Heun { steps: 30, spacing: Spacing::Karras };
        assert!(sample(&model, &d, &SampleSpec::new(1, bad, 0), |_, _| {}).is_err());
        assert!(timesteps(&d, bad).is_err());
    }

    #[test]
    fn reverse_from_pure_noise_is_sample() {
        let dev = Device::Cpu;
        let model = UNet::new(UNetConfig::tiny(), 2, DType::F32, &dev).unwrap();
        let d = Diffusion::new(Schedule::Linear, 30, Target::Eps).unwrap();
        for sampler in [Sampler::Ddim { steps: 6, eta: 0.5 }, Sampler::Ddpm { variance: Variance::FixedLarge }] {
            let spec = SampleSpec::new(2, sampler, 9);
            let s = sample(&model, &d, &spec, |_, _| {}).unwrap();
            let x_t = Tensor::randn([2, 1, 8, 8], 9, INIT_STREAM, DType::F32, &dev).unwrap();
            let ts = timesteps(&d, sampler).unwrap();
            let r = reverse_from(&model, &d, sampler, true, &x_t, &ts, 9, |_, _| {}).unwrap();
            assert_eq!(s.images.to_vec_f32().unwrap(), r.to_vec_f32().unwrap(), "{sampler:?}");
        }
    }
}
