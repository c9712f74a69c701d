//! The forward process of DDPM: noise schedules, q_sample through the fused
//! noise-add op, the regression targets (eps, x0, v) and their inverses.

use crate::{Error, Result};
use diffuse_tensor::{ops, DType, Device, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// betas linear from 1e-4 to 0.02 (Ho et al. 2020).
    Linear,
    /// alpha-bar = cos^2 with offset 0.008 (Nichol & Dhariwal 2021).
    Cosine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Eps,
    X0,
    V,
}

impl std::str::FromStr for Schedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(Schedule::Linear),
            "cosine" => Ok(Schedule::Cosine),
            _ => Err(Error::Config(format!("unknown schedule {s:?} (linear or cosine)"))),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "eps" => Ok(Target::Eps),
            "x0" => Ok(Target::X0),
            "v" => Ok(Target::V),
            _ => Err(Error::Config(format!("unknown target {s:?} (eps, x0 or v)"))),
        }
    }
}

/// Philox stream of the per-image timesteps; the noise uses stream 0.
pub const TIMESTEP_STREAM: u32 = 1;
const NOISE_STREAM: u32 = 0;

#[derive(Clone, Debug)]
pub struct Diffusion {
    pub timesteps: usize,
    pub target: Target,
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
}

/// The most diffusion timesteps a schedule may have: each is a few f64s
/// here and one model call per DDPM sampling step.
pub const MAX_TIMESTEPS: usize = 100_000;

impl Diffusion {
    pub fn new(schedule: Schedule, timesteps: usize, target: Target) -> Result<Self> {
        if timesteps < 2 {
            return Err(Error::Config(format!("need at least 2 diffusion timesteps, got {timesteps}")));
        }
        if timesteps > MAX_TIMESTEPS {
            return Err(Error::Config(format!(
                "{timesteps} diffusion timesteps is above the limit of {MAX_TIMESTEPS} (the paper uses 1000)"
            )));
        }
        let t = timesteps as f64;
        let betas: Vec<f64> = match schedule {
            Schedule::Linear => {
                // 1e-4..0.02 at T = 1000, scaled by 1000/T for other T so
                // the total noise stays comparable (Nichol & Dhariwal).
                let scale = 1000.0 / t;
                let (b0, b1) = (1e-4 * scale, (0.02 * scale).min(0.999));
                (0..timesteps).map(|i| b0 + (b1 - b0) * i as f64 / (t - 1.0)).collect()
            }
            Schedule::Cosine => {
                let f = |i: f64| ((i / t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..timesteps).map(|i| (1.0 - f(i as f64 + 1.0) / f(i as f64)).min(0.999)).collect()
            }
        };
        let mut alphas_cumprod = Vec::with_capacity(timesteps);
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        Ok(Diffusion { timesteps, target, betas, alphas_cumprod })
    }

    pub fn beta(&self, t: usize) -> f64 {
        self.betas[t]
    }

    /// alpha-bar_t; t = -1 (before the first step) is 1.
    pub fn abar(&self, t: isize) -> f64 {
        if t < 0 {
            1.0
        } else {
            self.alphas_cumprod[t as usize]
        }
    }

    /// Uniform timesteps for a batch: a pure function of (seed, step, i).
    pub fn draw_timesteps(&self, n: usize, seed: u64, step: u32) -> Vec<usize> {
        crate::loss_weighting::TimestepSampling::Uniform.draw(self.timesteps, n, seed, step, TIMESTEP_STREAM)
    }

    fn per_sample(&self, ts: &[usize], f: impl Fn(f64) -> f64, device: &Device, dtype: DType) -> Result<Tensor> {
        let v: Vec<f64> = ts.iter().map(|&t| f(self.alphas_cumprod[t])).collect();
        Ok(Tensor::from_vec(v, [ts.len()])?.to_dtype(dtype)?.to_device(device)?)
    }

    /// x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, eps drawn inside the
    /// fused op from Philox (seed, step): the same noise on every device.
    pub fn q_sample(&self, x0: &Tensor, ts: &[usize], seed: u64, step: u32) -> Result<(Tensor, Tensor)> {
        self.q_sample_at(x0, ts, seed, step, 0)
    }

    /// [`Diffusion::q_sample`] of the shard of a batch that starts at sample
    /// `first_sample`: its noise is the one the whole batch draws for those
    /// samples (data parallelism; 0 for a whole batch).
    pub fn q_sample_at(
        &self,
        x0: &Tensor,
        ts: &[usize],
        seed: u64,
        step: u32,
        first_sample: u64,
    ) -> Result<(Tensor, Tensor)> {
        let (dev, dt) = (x0.device(), x0.dtype());
        let a = self.per_sample(ts, f64::sqrt, &dev, dt)?;
        let b = self.per_sample(ts, |ab| (1.0 - ab).sqrt(), &dev, dt)?;
        let per_sample = (x0.numel() / ts.len().max(1)) as u64;
        self.q_sample_with(x0, &a, &b, seed, step, first_sample * per_sample)
    }

    /// sqrt(abar_t) and sqrt(1 - abar_t) of each timestep, in f64 (what
    /// [`Diffusion::q_sample`] scales by, before rounding to the dtype).
    pub fn noise_coefficients(&self, ts: &[usize]) -> (Vec<f64>, Vec<f64>) {
        ts.iter().map(|&t| (self.alphas_cumprod[t].sqrt(), (1.0 - self.alphas_cumprod[t]).sqrt())).unzip()
    }

    /// [`Diffusion::q_sample_at`] with its per-sample coefficients given as
    /// tensors `a` = sqrt(abar_t), `b` = sqrt(1 - abar_t) (already on the
    /// device) and the shard's noise at element `offset` of the batch's draw.
    pub fn q_sample_with(
        &self,
        x0: &Tensor,
        a: &Tensor,
        b: &Tensor,
        seed: u64,
        step: impl Into<diffuse_tensor::philox::PhiloxStep>,
        offset: u64,
    ) -> Result<(Tensor, Tensor)> {
        let o = ops::noise_add_at(x0, a, b, seed, step, NOISE_STREAM, offset)?;
        Ok((o.x_t, o.eps))
    }

    /// What the network is trained to predict.
    pub fn target_of(&self, x0: &Tensor, eps: &Tensor, ts: &[usize]) -> Result<Tensor> {
        match self.target {
            Target::Eps => Ok(eps.clone()),
            Target::X0 => Ok(x0.clone()),
            Target::V => {
                let (dev, dt) = (x0.device(), x0.dtype());
                let a = self.per_sample(ts, f64::sqrt, &dev, dt)?;
                let b = self.per_sample(ts, |ab| (1.0 - ab).sqrt(), &dev, dt)?;
                self.target_of_with(x0, eps, &a, &b)
            }
        }
    }

    /// [`Diffusion::target_of`] with the coefficients given as tensors.
    pub fn target_of_with(&self, x0: &Tensor, eps: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        match self.target {
            Target::Eps => Ok(eps.clone()),
            Target::X0 => Ok(x0.clone()),
            Target::V => Ok(ops::sub(&ops::scale_per_sample(eps, a)?, &ops::scale_per_sample(x0, b)?)?),
        }
    }

    /// The network's output at x_t (one shared t) as (eps, x0) predictions.
    pub fn split_prediction(&self, x_t: &Tensor, out: &Tensor, t: usize) -> Result<(Tensor, Tensor)> {
        self.split_prediction_at(x_t, out, self.alphas_cumprod[t])
    }

    /// [`Diffusion::split_prediction`] at any alpha-bar (the samplers that
    /// visit noise levels between the integer timesteps).
    pub fn split_prediction_at(&self, x_t: &Tensor, out: &Tensor, abar: f64) -> Result<(Tensor, Tensor)> {
        let a = abar.sqrt();
        let b = (1.0 - abar).sqrt();
        Ok(match self.target {
            Target::Eps => (out.clone(), ops::scale(&ops::add_scaled(x_t, out, -b)?, 1.0 / a)?),
            Target::X0 => (ops::scale(&ops::add_scaled(x_t, out, -a)?, 1.0 / b)?, out.clone()),
            // x0 = a x_t - b v ; eps = b x_t + a v
            Target::V => {
                (ops::add_scaled(&ops::scale(x_t, b)?, out, a)?, ops::add_scaled(&ops::scale(x_t, a)?, out, -b)?)
            }
        })
    }

    /// eps implied by x_t and an x0 estimate at timestep t.
    pub fn eps_from_x0(&self, x_t: &Tensor, x0: &Tensor, t: usize) -> Result<Tensor> {
        self.eps_from_x0_at(x_t, x0, self.alphas_cumprod[t])
    }

    /// [`Diffusion::eps_from_x0`] at any alpha-bar.
    pub fn eps_from_x0_at(&self, x_t: &Tensor, x0: &Tensor, abar: f64) -> Result<Tensor> {
        let a = abar.sqrt();
        let b = (1.0 - abar).sqrt();
        Ok(ops::scale(&ops::add_scaled(x_t, x0, -a)?, 1.0 / b)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_matches_the_paper() {
        let d = Diffusion::new(Schedule::Linear, 1000, Target::Eps).unwrap();
        assert!((d.beta(0) - 1e-4).abs() < 1e-15 && (d.beta(999) - 0.02).abs() < 1e-15);
        let want: f64 = (0..1000).map(|i| 1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 999.0)).product();
        assert!((d.abar(999) - want).abs() < 1e-15);
        assert_eq!(d.abar(-1), 1.0);
    }

    #[test]
    fn cosine_schedule_is_monotone_and_ends_near_zero() {
        let d = Diffusion::new(Schedule::Cosine, 1000, Target::Eps).unwrap();
        for t in 1..1000 {
            assert!(d.abar(t) < d.abar(t - 1));
        }
        assert!(d.abar(999) < 1e-3 && d.abar(0) > 0.999);
    }

    #[test]
    fn predictions_invert_each_target() {
        let dev = Device::Cpu;
        let x0 = Tensor::randn([2, 1, 4, 4], 1, 0, DType::F64, &dev).unwrap();
        for target in [Target::Eps, Target::X0, Target::V] {
            let d = Diffusion::new(Schedule::Linear, 1000, target).unwrap();
            let ts = [417, 417];
            let (x_t, eps) = d.q_sample(&x0, &ts, 3, 0).unwrap();
            let tgt = d.target_of(&x0, &eps, &ts).unwrap();
            let (e, x) = d.split_prediction(&x_t, &tgt, 417).unwrap();
            for (a, b) in e.to_vec_f64().unwrap().iter().zip(eps.to_vec_f64().unwrap()) {
                assert!((a - b).abs() < 1e-9, "{target:?} eps");
            }
            for (a, b) in x.to_vec_f64().unwrap().iter().zip(x0.to_vec_f64().unwrap()) {
                assert!((a - b).abs() < 1e-9, "{target:?} x0");
            }
        }
    }
}
