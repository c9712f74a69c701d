//! The noise level of an image in pixel units and the diffusion timestep
//! with the same noise.
//!
//! A user's noisy image is `p~ = p + s n` with pixels `p` in `[0, 1]`,
//! `n ~ N(0, I)` and `s` the noise's standard deviation in pixel units
//! (`--sigma`). The model works on `x = 2p - 1` in `[-1, 1]`, so the noisy
//! image there is
//!
//! ```text
//! y = 2p~ - 1 = x0 + 2s n.
//! ```
//!
//! The forward process gives `x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`,
//! i.e. `x_t / sqrt(abar_t) = x0 + sqrt((1 - abar_t) / abar_t) eps`. The two
//! have the same signal-to-noise ratio when
//!
//! ```text
//! 2s = sqrt((1 - abar) / abar)   <=>   abar = 1 / (1 + 4 s^2),
//! ```
//!
//! and then `x_t = sqrt(abar_t) y` is distributed exactly as the forward
//! process at t. Timesteps are discrete, so [`timestep_for_sigma`] takes the t
//! whose log signal-to-noise ratio `ln(abar / (1 - abar))` is nearest to
//! `-ln(4 s^2)`, and [`sigma_of_timestep`] gives the `s` that t really has.

use crate::diffusion::Diffusion;
use crate::{Error, Result};

/// The alpha-bar whose noise equals pixel noise `sigma`: `1 / (1 + 4 sigma^2)`.
pub fn abar_for_sigma(sigma: f64) -> f64 {
    1.0 / (1.0 + 4.0 * sigma * sigma)
}

/// The pixel-unit noise of timestep t: `sqrt((1 - abar_t) / abar_t) / 2`.
pub fn sigma_of_timestep(d: &Diffusion, t: usize) -> f64 {
    let ab = d.abar(t as isize);
    ((1.0 - ab) / ab).sqrt() / 2.0
}

/// The timestep whose log-SNR is nearest to that of pixel noise `sigma` (> 0).
pub fn timestep_for_sigma(d: &Diffusion, sigma: f64) -> Result<usize> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(Error::InvalidArgument(format!("noise level sigma must be positive, got {sigma}")));
    }
    let want = -(4.0 * sigma * sigma).ln();
    let log_snr = |t: usize| {
        let ab = d.abar(t as isize);
        (ab / (1.0 - ab)).ln()
    };
    let mut best = 0;
    for t in 1..d.timesteps {
        if (log_snr(t) - want).abs() < (log_snr(best) - want).abs() {
            best = t;
        }
    }
    Ok(best)
}

/// Scales a noisy image `y = x0 + 2 sigma n` (model units) into the x_t of
/// timestep t: `x_t = sqrt(abar_t) y`.
pub fn scale_to_timestep(d: &Diffusion, t: usize) -> f64 {
    d.abar(t as isize).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::{Schedule, Target};

    #[test]
    fn sigma_and_timestep_round_trip() {
        for schedule in [Schedule::Linear, Schedule::Cosine] {
            let d = Diffusion::new(schedule, 1000, Target::Eps).unwrap();
            for t in [3, 17, 100, 333, 640, 998] {
                assert_eq!(timestep_for_sigma(&d, sigma_of_timestep(&d, t)).unwrap(), t, "{schedule:?} t={t}");
            }
            // The alpha-bar of sigma lies between those of the neighbours of
            // the chosen t.
            for sigma in [0.05, 0.1, 0.2, 0.4, 0.8] {
                let t = timestep_for_sigma(&d, sigma).unwrap();
                let ab = abar_for_sigma(sigma);
                assert!(d.abar(t as isize - 1) >= ab && ab >= d.abar(t as isize + 1), "{schedule:?} sigma={sigma}");
            }
        }
    }

    #[test]
    fn scaled_noisy_image_has_the_forward_process_variance() {
        // sqrt(abar)^2 (1 + 4 s^2) ... per unit: signal coefficient sqrt(abar),
        // noise std sqrt(abar) 2s = sqrt(1 - abar) when abar = 1/(1 + 4s^2).
        for s in [0.01f64, 0.1, 0.3, 1.0] {
            let ab = abar_for_sigma(s);
            assert!((ab.sqrt() * 2.0 * s - (1.0 - ab).sqrt()).abs() < 1e-12);
        }
    }

    #[test]
    fn bad_sigma_is_an_error() {
        let d = Diffusion::new(Schedule::Linear, 100, Target::Eps).unwrap();
        for s in [0.0, -0.1, f64::NAN, f64::INFINITY] {
            assert!(timestep_for_sigma(&d, s).is_err());
        }
    }
}
