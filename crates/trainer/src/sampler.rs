//! Samplers: DDPM ancestral sampling (fixed-large or fixed-small variance)
//! and DDIM (any number of steps, any eta). Noise comes from Philox through
//! the fused noise-add op, so a seed gives the same noise on every device
//! (bit for bit on the CPU and the emulator, within a few ulp on CUDA; see
//! ARCHITECTURE.md, "Determinism across devices"); images agree up to the
//! rounding of the model's forward.

use crate::diffusion::Diffusion;
use crate::guidance::{self, Conditioning};
use crate::memory_budget::MemoryBudget;
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
    Ddpm { variance: Variance },
    Ddim { steps: usize, eta: f64 },
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
        }
    }
}

/// Samples in [-1, 1], shape [N, C, H, W] on the CPU, and the trajectory:
/// one entry per recorded step, each [k, C, H, W].
pub struct Samples {
    pub images: Tensor,
    pub trajectory: Vec<Tensor>,
}

/// The timesteps a sampler visits, from noisiest to cleanest.
pub fn timesteps(d: &Diffusion, sampler: Sampler) -> Result<Vec<usize>> {
    match sampler {
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

/// Philox stream of the starting noise; step noise uses stream 1 at step t.
const INIT_STREAM: u32 = 7;
const STEP_STREAM: u32 = 8;

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
    let ts = timesteps(d, spec.sampler)?;
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
    let record_every = (ts.len() / spec.trajectory_points.max(1)).max(1);
    let total_calls = spec.n.div_ceil(spec.batch) * ts.len();
    let mut calls = 0;
    for (chunk, start) in (0..spec.n).step_by(spec.batch).enumerate() {
        let b = spec.batch.min(spec.n - start);
        let shape = [b, cfg.in_ch, cfg.image_size, cfg.image_size];
        // Each chunk of `batch` images draws from its own seed, so the first
        // images are the same whatever --n is (for a fixed --batch).
        let seed = spec.seed.wrapping_add(chunk as u64);
        let mut x = Tensor::randn(shape, seed, INIT_STREAM, DType::F32, &device)?;
        let keep = if chunk == 0 { spec.trajectory.min(b) } else { 0 };
        for (i, &t) in ts.iter().enumerate() {
            if keep > 0 && i % record_every == 0 {
                trajectory.push(first_images(&x, keep)?);
            }
            let t_prev = ts.get(i + 1).map(|&p| p as isize).unwrap_or(-1);
            let cond =
                Conditioning { labels: spec.labels.as_ref().map(|l| &l[start..start + b]), scale: spec.guidance };
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
