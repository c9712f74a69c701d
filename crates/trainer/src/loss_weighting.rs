//! How the training loss weighs timesteps: the per-image loss weight
//! (min-SNR-gamma, Hang et al. 2023) and how timesteps are drawn. Both are
//! part of the run config, so a resumed run weighs and draws as before.

use crate::diffusion::Target;
use crate::{Error, Result};
use diffuse_tensor::{ops, philox, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LossWeighting {
    /// Plain MSE on the target.
    #[default]
    None,
    /// The loss of each image weighted so that, in terms of the x0 error,
    /// its weight is min(SNR, gamma): eps min(SNR, g) / SNR, x0 min(SNR, g),
    /// v min(SNR, g) / (SNR + 1).
    MinSnr { gamma: f64 },
}

/// Hang et al.'s default gamma.
pub const DEFAULT_GAMMA: f64 = 5.0;

impl std::str::FromStr for LossWeighting {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Config(format!("unknown loss weighting {s:?} (none, min-snr or min-snr:GAMMA)"));
        match s.split_once(':') {
            None if s == "none" => Ok(LossWeighting::None),
            None if s == "min-snr" => Ok(LossWeighting::MinSnr { gamma: DEFAULT_GAMMA }),
            Some(("min-snr", g)) => {
                let gamma: f64 = g.trim().parse().map_err(|_| bad())?;
                if !(gamma > 0.0 && gamma.is_finite()) {
                    return Err(Error::Config(format!("min-SNR gamma must be positive, got {gamma}")));
                }
                Ok(LossWeighting::MinSnr { gamma })
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for LossWeighting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LossWeighting::None => write!(f, "none"),
            LossWeighting::MinSnr { gamma } => write!(f, "min-snr:{gamma}"),
        }
    }
}

impl LossWeighting {
    /// The loss weight of an image at alpha-bar `abar` for `target`.
    pub fn weight(&self, target: Target, abar: f64) -> f64 {
        match *self {
            LossWeighting::None => 1.0,
            LossWeighting::MinSnr { gamma } => {
                let snr = abar / (1.0 - abar);
                let clipped = snr.min(gamma);
                match target {
                    Target::Eps => clipped / snr,
                    Target::X0 => clipped,
                    Target::V => clipped / (snr + 1.0),
                }
            }
        }
    }

    pub fn validate(&self) -> Result<()> {
        match *self {
            LossWeighting::MinSnr { gamma } if !(gamma > 0.0 && gamma.is_finite()) => {
                Err(Error::Config(format!("min-SNR gamma must be positive, got {gamma}")))
            }
            _ => Ok(()),
        }
    }
}

/// mean_n w_n mean_i (pred - target)^2 and its gradient times `dloss`, on
/// any device: sqrt(w) scales both operands of the plain MSE and its
/// gradient. Without weights this is exactly the plain MSE op. The loss
/// stays on the device (a [1] tensor): training reads it only on logged
/// steps.
pub fn weighted_mse(pred: &Tensor, target: &Tensor, weights: Option<&[f64]>, dloss: f64) -> Result<(Tensor, Tensor)> {
    let Some(w) = weights else {
        let loss = ops::mse_loss_forward(pred, target)?;
        return Ok((loss, ops::mse_loss_backward(pred, target, dloss)?));
    };
    let sw: Vec<f64> = w.iter().map(|w| w.sqrt()).collect();
    let sw = Tensor::from_vec(sw, [w.len()])?.to_dtype(pred.dtype())?.to_device(&pred.device())?;
    weighted_mse_sqrt(pred, target, Some(&sw), dloss)
}

/// [`weighted_mse`] with the square roots of the weights given as a tensor
/// on the prediction's device (None: unweighted).
pub fn weighted_mse_sqrt(
    pred: &Tensor,
    target: &Tensor,
    sqrt_w: Option<&Tensor>,
    dloss: f64,
) -> Result<(Tensor, Tensor)> {
    let Some(sw) = sqrt_w else {
        let loss = ops::mse_loss_forward(pred, target)?;
        return Ok((loss, ops::mse_loss_backward(pred, target, dloss)?));
    };
    let (p, t) = (ops::scale_per_sample(pred, sw)?, ops::scale_per_sample(target, sw)?);
    let loss = ops::mse_loss_forward(&p, &t)?;
    let dp = ops::mse_loss_backward(&p, &t, dloss)?;
    Ok((loss, ops::scale_per_sample(&dp, sw)?))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimestepSampling {
    /// Each image's t drawn independently and uniformly.
    #[default]
    Uniform,
    /// One uniform offset u per batch, image i at (u + i / n) mod 1: still
    /// uniform per image, but a batch covers [0, T) evenly, so the loss
    /// varies less from batch to batch (Kingma et al. 2021's low-discrepancy
    /// sampler).
    Stratified,
}

impl std::str::FromStr for TimestepSampling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" => Ok(TimestepSampling::Uniform),
            "stratified" => Ok(TimestepSampling::Stratified),
            _ => Err(Error::Config(format!("unknown timestep sampling {s:?} (uniform or stratified)"))),
        }
    }
}

impl TimestepSampling {
    /// The timesteps of a batch of n: a pure function of (seed, step) on
    /// Philox `stream`.
    pub fn draw(&self, timesteps: usize, n: usize, seed: u64, step: u32, stream: u32) -> Vec<usize> {
        self.draw_part(timesteps, n, 0..n, seed, step, stream)
    }

    /// The timesteps of samples `part` of a batch of n: `draw(..)[part]`,
    /// computed for those samples only (a data-parallel rank's shard).
    pub fn draw_part(
        &self,
        timesteps: usize,
        n: usize,
        part: std::ops::Range<usize>,
        seed: u64,
        step: u32,
        stream: u32,
    ) -> Vec<usize> {
        let part = part.start.min(n)..part.end.min(n);
        match self {
            TimestepSampling::Uniform => (part.start as u64..part.end as u64)
                .map(|i| (philox::bits(seed, step, stream, i) as u64 % timesteps as u64) as usize)
                .collect(),
            TimestepSampling::Stratified => {
                let u = philox::bits(seed, step, stream, 0) as f64 / 4294967296.0;
                part.map(|i| {
                    let f = (u + i as f64 / n as f64).fract();
                    ((f * timesteps as f64) as usize).min(timesteps - 1)
                })
                .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::{Diffusion, Schedule};
    use diffuse_tensor::{DType, Device};

    #[test]
    fn a_part_of_the_timesteps_is_that_slice_of_the_whole_draw() {
        for sampling in [TimestepSampling::Uniform, TimestepSampling::Stratified] {
            for n in [1usize, 7, 12] {
                let whole = sampling.draw(1000, n, 9, 3, 2);
                for world in (1..=n).filter(|w| n % w == 0) {
                    let local = n / world;
                    let parts: Vec<usize> = (0..world)
                        .flat_map(|r| sampling.draw_part(1000, n, r * local..(r + 1) * local, 9, 3, 2))
                        .collect();
                    assert_eq!(parts, whole, "{sampling:?} n {n} world {world}");
                }
            }
        }
    }

    #[test]
    fn min_snr_weights_give_the_x0_weight_min_snr_gamma() {
        let w = LossWeighting::MinSnr { gamma: 5.0 };
        let d = Diffusion::new(Schedule::Linear, 1000, Target::Eps).unwrap();
        for t in [0isize, 10, 100, 300, 999] {
            let abar = d.abar(t);
            let snr = abar / (1.0 - abar);
            let want_x0 = snr.min(5.0);
            // eps error = sqrt(SNR) x0 error; v error = sqrt(SNR + 1) x0 error.
            assert!((w.weight(Target::Eps, abar) * snr - want_x0).abs() < 1e-9 * want_x0, "t = {t}");
            assert!((w.weight(Target::X0, abar) - want_x0).abs() < 1e-12 * want_x0);
            assert!((w.weight(Target::V, abar) * (snr + 1.0) - want_x0).abs() < 1e-9 * want_x0);
        }
        // Closed forms at two points: SNR = 1 and SNR = 20.
        let (ab1, ab20) = (0.5, 20.0 / 21.0);
        assert!((w.weight(Target::Eps, ab1) - 1.0).abs() < 1e-12);
        assert!((w.weight(Target::Eps, ab20) - 0.25).abs() < 1e-12);
        assert!((w.weight(Target::X0, ab20) - 5.0).abs() < 1e-12);
        assert!((w.weight(Target::V, ab1) - 0.5).abs() < 1e-12);
        assert!((w.weight(Target::V, ab20) - 5.0 / 21.0).abs() < 1e-12);
        assert_eq!(LossWeighting::None.weight(Target::V, 0.3), 1.0);
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!("none".parse::<LossWeighting>().unwrap(), LossWeighting::None);
        assert_eq!("min-snr".parse::<LossWeighting>().unwrap(), LossWeighting::MinSnr { gamma: 5.0 });
        let w: LossWeighting = "min-snr:2.5".parse().unwrap();
        assert_eq!(w, LossWeighting::MinSnr { gamma: 2.5 });
        assert_eq!(w.to_string().parse::<LossWeighting>().unwrap(), w);
        for bad in ["min-snr:0", "min-snr:-1", "min-snr:x", "minsnr", "", "min-snr:inf"] {
            assert!(bad.parse::<LossWeighting>().is_err(), "{bad}");
        }
        assert!("stratified".parse::<TimestepSampling>().is_ok() && "x".parse::<TimestepSampling>().is_err());
    }

    #[test]
    fn weighted_mse_matches_naive_loops() {
        let dev = Device::Cpu;
        let (n, per) = (3, 2 * 5 * 3);
        let pred = Tensor::randn([n, 2, 5, 3], 1, 0, DType::F64, &dev).unwrap();
        let target = Tensor::randn([n, 2, 5, 3], 2, 0, DType::F64, &dev).unwrap();
        let w = [0.3, 1.7, 0.05];
        let (loss, grad) = weighted_mse(&pred, &target, Some(&w), 0.5).unwrap();
        let loss = loss.scalar_f64().unwrap();
        let (p, t, g) = (pred.to_vec_f64().unwrap(), target.to_vec_f64().unwrap(), grad.to_vec_f64().unwrap());
        let mut want = 0.0;
        for i in 0..n * per {
            let e = p[i] - t[i];
            want += w[i / per] * e * e / (n * per) as f64;
            let dg = 0.5 * 2.0 * w[i / per] * e / (n * per) as f64;
            assert!((g[i] - dg).abs() < 1e-14, "grad {i}");
        }
        assert!((loss - want).abs() < 1e-12);
        // No weights: the plain op, bit for bit.
        let (l0, g0) = weighted_mse(&pred, &target, None, 0.5).unwrap();
        assert_eq!(l0.scalar_f64().unwrap(), ops::mse_loss_forward(&pred, &target).unwrap().scalar_f64().unwrap());
        assert_eq!(
            g0.to_vec_f64().unwrap(),
            ops::mse_loss_backward(&pred, &target, 0.5).unwrap().to_vec_f64().unwrap()
        );
    }

    #[test]
    fn stratified_timesteps_cover_the_range_evenly_and_are_uniform_overall() {
        let s = TimestepSampling::Stratified;
        let ts = s.draw(1000, 8, 3, 17, 1);
        let mut sorted = ts.clone();
        sorted.sort();
        // One in each eighth of [0, 1000).
        for (k, t) in sorted.iter().enumerate() {
            assert!((k * 125..(k + 1) * 125).contains(t), "{sorted:?}");
        }
        assert_eq!(ts, s.draw(1000, 8, 3, 17, 1));
        // Over many batches, every tenth of the range about equally often.
        let mut hist = [0usize; 10];
        for step in 0..500 {
            for t in s.draw(1000, 7, 1, step, 1) {
                hist[t / 100] += 1;
            }
        }
        assert!(hist.iter().all(|&h| h.abs_diff(350) < 60), "{hist:?}");
        // Uniform keeps the draws of earlier versions: Philox bits mod T.
        let want: Vec<usize> = (0..9).map(|i| (philox::bits(4, 2, 1, i) % 1000) as usize).collect();
        assert_eq!(TimestepSampling::Uniform.draw(1000, 9, 4, 2, 1), want);
    }
}
