//! A discrete schedule seen as a continuous one, for the ODE/SDE samplers:
//! the noise level sigma_t = sqrt((1 - abar_t) / abar_t) (x_t / sqrt(abar_t)
//! = x0 + sigma_t eps), log-linear between integer timesteps (as
//! k-diffusion's DiscreteSchedule), and the spacings of the levels a sampler
//! visits.

use crate::diffusion::Diffusion;
use crate::{Error, Result};

/// Where the sampler's noise levels lie between sigma_max (t = T - 1) and
/// sigma_min (t = 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// Timesteps evenly spaced in t, T - 1 down to about (T - 1) / steps,
    /// rounded to integers (diffusers' "linspace").
    Uniform,
    /// Evenly spaced in log-SNR = -2 log sigma (Lu et al. 2022).
    LogSnr,
    /// sigma^(1/7) evenly spaced (Karras et al. 2022, rho = 7).
    Karras,
}

impl std::str::FromStr for Spacing {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" => Ok(Spacing::Uniform),
            "logsnr" => Ok(Spacing::LogSnr),
            "karras" => Ok(Spacing::Karras),
            _ => Err(Error::Config(format!("unknown spacing {s:?} (uniform, logsnr or karras)"))),
        }
    }
}

/// Karras et al.'s rho.
const KARRAS_RHO: f64 = 7.0;

/// Where samplers start the Karras and log-SNR ramps unless told otherwise:
/// the schedule's own top level, capped here. The data lie in [-1, 1], so
/// at sigma = 160 they are under 1% of x_t's scale and a noisier level adds
/// nothing; the linear schedule's top (157 at T = 1000) is below the cap,
/// the cosine schedule's (2.0e4) is not, and a ramp from there spends a
/// few-step sampler's levels where no digit forms (BENCHMARKS.md, issue 20).
pub const DEFAULT_SIGMA_MAX: f64 = 160.0;

#[derive(Clone, Debug)]
pub struct NoiseLevels {
    /// ln sigma_t for t = 0..T, strictly increasing.
    log_sigmas: Vec<f64>,
}

impl NoiseLevels {
    pub fn new(d: &Diffusion) -> Self {
        let log_sigmas = (0..d.timesteps)
            .map(|t| {
                let ab = d.abar(t as isize);
                0.5 * ((1.0 - ab) / ab).ln()
            })
            .collect();
        NoiseLevels { log_sigmas }
    }

    pub fn timesteps(&self) -> usize {
        self.log_sigmas.len()
    }

    pub fn sigma_min(&self) -> f64 {
        self.log_sigmas[0].exp()
    }

    pub fn sigma_max(&self) -> f64 {
        self.log_sigmas[self.log_sigmas.len() - 1].exp()
    }

    /// sigma at a (fractional) timestep in [0, T - 1].
    pub fn sigma_at(&self, t: f64) -> f64 {
        let last = self.log_sigmas.len() - 1;
        let t = t.clamp(0.0, last as f64);
        let lo = (t.floor() as usize).min(last - 1);
        let w = t - lo as f64;
        ((1.0 - w) * self.log_sigmas[lo] + w * self.log_sigmas[lo + 1]).exp()
    }

    /// The (fractional) timestep of a noise level: the inverse of
    /// [`NoiseLevels::sigma_at`], clamped to [0, T - 1]. This is the t the
    /// network is given.
    pub fn t_at(&self, sigma: f64) -> f64 {
        let ls = sigma.ln();
        let last = self.log_sigmas.len() - 1;
        // The first index whose level is above ls, so ls lies in [hi - 1, hi].
        let hi = self.log_sigmas.partition_point(|&l| l <= ls).clamp(1, last);
        let (a, b) = (self.log_sigmas[hi - 1], self.log_sigmas[hi]);
        let w = ((ls - a) / (b - a)).clamp(0.0, 1.0);
        (hi - 1) as f64 + w
    }

    /// The noise levels a `steps`-step sampler visits: `steps` levels from
    /// sigma_max down, then 0 (the clean image). The full range of the
    /// schedule, as diffusers' schedulers; samplers use [`Self::sigmas_up_to`].
    pub fn sigmas(&self, spacing: Spacing, steps: usize) -> Result<Vec<f64>> {
        self.sigmas_up_to(spacing, steps, f64::INFINITY)
    }

    /// [`Self::sigmas`] with the Karras and log-SNR ramps starting at
    /// min(`sigma_max`, the schedule's top) instead of the top (uniform
    /// spacing visits timesteps and ignores it; `f64::INFINITY`: the top).
    pub fn sigmas_up_to(&self, spacing: Spacing, steps: usize, sigma_max: f64) -> Result<Vec<f64>> {
        let t_max = self.timesteps() - 1;
        if steps == 0 || steps > t_max {
            return Err(Error::Config(format!("steps must be in 1..={t_max}, got {steps}")));
        }
        if sigma_max.is_nan() || sigma_max <= self.sigma_min() {
            return Err(Error::Config(format!(
                "sigma_max must be above the schedule's smallest noise level {:.3e}, got {sigma_max}",
                self.sigma_min()
            )));
        }
        // ramp[i] = i / (steps - 1): 0 at sigma_max, 1 at sigma_min.
        let ramp = |i: usize| if steps == 1 { 0.0 } else { i as f64 / (steps - 1) as f64 };
        let (lo, hi) = (self.log_sigmas[0], self.log_sigmas[t_max].min(sigma_max.ln()));
        let mut s: Vec<f64> = match spacing {
            Spacing::Uniform => {
                // numpy's linspace(0, T - 1, steps + 1).round() (ties to even),
                // noisiest first, without t = 0.
                let step = t_max as f64 / steps as f64;
                (1..=steps)
                    .rev()
                    .map(|k| {
                        let t = if k == steps { t_max as f64 } else { (k as f64 * step).round_ties_even() };
                        self.log_sigmas[t as usize].exp()
                    })
                    .collect()
            }
            Spacing::LogSnr => (0..steps).map(|i| (hi + ramp(i) * (lo - hi)).exp()).collect(),
            Spacing::Karras => {
                let (min_inv, max_inv) = (lo.exp().powf(1.0 / KARRAS_RHO), hi.exp().powf(1.0 / KARRAS_RHO));
                (0..steps).map(|i| (max_inv + ramp(i) * (min_inv - max_inv)).powf(KARRAS_RHO)).collect()
            }
        };
        s.push(0.0);
        Ok(s)
    }
}

/// The VP scale of a noise level: x_t = alpha (x0 + sigma eps), alpha = sqrt(abar).
pub fn alpha_of(sigma: f64) -> f64 {
    1.0 / (1.0 + sigma * sigma).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::{Schedule, Target};

    fn levels(schedule: Schedule) -> NoiseLevels {
        NoiseLevels::new(&Diffusion::new(schedule, 1000, Target::Eps).unwrap())
    }

    #[test]
    fn integer_timesteps_are_the_schedule_and_t_inverts_sigma() {
        let d = Diffusion::new(Schedule::Cosine, 1000, Target::Eps).unwrap();
        let l = NoiseLevels::new(&d);
        for t in [0usize, 1, 17, 500, 998, 999] {
            let ab = d.abar(t as isize);
            let want = ((1.0 - ab) / ab).sqrt();
            assert!((l.sigma_at(t as f64) / want - 1.0).abs() < 1e-12, "t = {t}");
            assert!((l.t_at(want) - t as f64).abs() < 1e-9, "t = {t}: {}", l.t_at(want));
        }
        for t in [0.25, 3.5, 411.7, 998.99] {
            assert!((l.t_at(l.sigma_at(t)) - t).abs() < 1e-9, "t = {t}");
            // Geometric mean of the neighbours at a half step.
        }
        let mid = l.sigma_at(3.5);
        assert!((mid - (l.sigma_at(3.0) * l.sigma_at(4.0)).sqrt()).abs() < 1e-12 * mid);
        assert_eq!(l.t_at(1e-9), 0.0);
        assert_eq!(l.t_at(1e9), 999.0);
    }

    #[test]
    fn spacings_start_at_sigma_max_and_end_at_zero() {
        let l = levels(Schedule::Linear);
        for spacing in [Spacing::Uniform, Spacing::LogSnr, Spacing::Karras] {
            for steps in [1, 2, 7, 50, 999] {
                let s = l.sigmas(spacing, steps).unwrap();
                assert_eq!(s.len(), steps + 1);
                assert_eq!(*s.last().unwrap(), 0.0);
                assert!((s[0] / l.sigma_max() - 1.0).abs() < 1e-12, "{spacing:?} {steps}");
                assert!(s.windows(2).all(|p| p[0] > p[1]), "{spacing:?} {steps}: {s:?}");
                if spacing != Spacing::Uniform && steps > 1 {
                    assert!((s[steps - 1] / l.sigma_min() - 1.0).abs() < 1e-12);
                }
            }
            assert!(l.sigmas(spacing, 0).is_err() && l.sigmas(spacing, 1000).is_err());
        }
        // numpy.linspace(0, 999, 7).round() = [0, 166, 333, 500, 666, 832, 999].
        let s = l.sigmas(Spacing::Uniform, 6).unwrap();
        let want: Vec<f64> = [999, 832, 666, 500, 333, 166].iter().map(|&t| l.sigma_at(t as f64)).collect();
        assert_eq!(&s[..6], &want[..]);
        // Capped ramps: the cap replaces the top, the rest of the ramp follows.
        let c = levels(Schedule::Cosine);
        assert!(c.sigma_max() > 1e4, "{}", c.sigma_max());
        for spacing in [Spacing::LogSnr, Spacing::Karras] {
            let capped = c.sigmas_up_to(spacing, 10, DEFAULT_SIGMA_MAX).unwrap();
            assert!((capped[0] / DEFAULT_SIGMA_MAX - 1.0).abs() < 1e-12, "{capped:?}");
            assert!((capped[9] / c.sigma_min() - 1.0).abs() < 1e-12);
            assert!(capped.windows(2).all(|p| p[0] > p[1]), "{capped:?}");
            // above the top (the linear schedule's 157) the cap changes nothing
            assert_eq!(l.sigmas_up_to(spacing, 10, DEFAULT_SIGMA_MAX).unwrap(), l.sigmas(spacing, 10).unwrap());
            assert!(c.sigmas_up_to(spacing, 10, c.sigma_min() / 2.0).is_err());
            assert!(c.sigmas_up_to(spacing, 10, f64::NAN).is_err());
        }
        let k = c.sigmas_up_to(Spacing::Karras, 5, 80.0).unwrap();
        let want: Vec<f64> = (0..5)
            .map(|i| {
                let (a, b) = (80f64.powf(1.0 / 7.0), c.sigma_min().powf(1.0 / 7.0));
                (a + i as f64 / 4.0 * (b - a)).powi(7)
            })
            .collect();
        for (x, y) in k.iter().zip(&want) {
            assert!((x / y - 1.0).abs() < 1e-12, "{k:?} vs {want:?}");
        }
        assert_eq!(c.sigmas_up_to(Spacing::Uniform, 6, 80.0).unwrap(), c.sigmas(Spacing::Uniform, 6).unwrap());
        // Log-SNR spacing: equal ratios.
        let s = l.sigmas(Spacing::LogSnr, 5).unwrap();
        let r: Vec<f64> = s[..5].windows(2).map(|p| p[0] / p[1]).collect();
        assert!(r.iter().all(|x| (x / r[0] - 1.0).abs() < 1e-12), "{r:?}");
    }
}
