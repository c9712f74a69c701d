//! ODE/SDE samplers over a list of noise levels (noisiest first, ending at
//! 0): DPM-Solver++(2M) and its SDE variant (Lu et al. 2022, as diffusers'
//! DPMSolverMultistepScheduler with the midpoint solver type and a
//! first-order first and last step) and Heun's second-order method (Karras
//! et al. 2022, Algorithm 1 without churn). They only see a [`Denoiser`], so
//! the tests run them on an exact analytic model.
//!
//! x is in the model's (variance-preserving) scale throughout:
//! x = alpha (x0 + sigma eps), alpha = 1 / sqrt(1 + sigma^2).

use crate::noise_levels::alpha_of;
use crate::{Error, Result};
use diffuse_tensor::{ops, Tensor};

/// A model's predictions at x and noise level sigma > 0: (eps, x0), consistent
/// with each other (x = alpha (x0 + sigma eps)).
pub trait Denoiser {
    fn predict(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)>;
}

/// Adds std * N(0, 1) noise to `mean` for step `step` of the SDE sampler.
pub trait NoiseSource {
    fn add_noise(&mut self, mean: &Tensor, std: f64, step: usize) -> Result<Tensor>;
}

/// Model calls of each sampler for `steps` steps.
pub fn dpm_calls(steps: usize) -> usize {
    steps
}

/// Heun takes an Euler step to sigma = 0, so one call fewer than two a step.
pub fn heun_calls(steps: usize) -> usize {
    (2 * steps).saturating_sub(1)
}

fn check_levels(sigmas: &[f64]) -> Result<()> {
    let ok = sigmas.len() >= 2
        && sigmas.windows(2).all(|p| p[0] > p[1])
        && sigmas.iter().all(|s| s.is_finite() && *s >= 0.0);
    if ok {
        Ok(())
    } else {
        Err(Error::Config("noise levels must be finite, >= 0 and strictly decreasing".into()))
    }
}

/// DPM-Solver++(2M) from x at sigmas[0] to sigmas.last() (0 for a sample;
/// the tests also stop above 0); with `noise`
/// the SDE variant. `before_step(i, x)` sees x at sigmas[i] before step i.
pub fn dpmpp_2m(
    den: &mut dyn Denoiser,
    mut noise: Option<&mut dyn NoiseSource>,
    x: &Tensor,
    sigmas: &[f64],
    mut before_step: impl FnMut(usize, &Tensor) -> Result<()>,
) -> Result<Tensor> {
    check_levels(sigmas)?;
    let mut x = x.clone();
    // The previous step's x0 prediction and its h.
    let mut prev: Option<(Tensor, f64)> = None;
    let n = sigmas.len() - 1;
    for i in 0..n {
        before_step(i, &x)?;
        let (s, t) = (sigmas[i], sigmas[i + 1]);
        let (_, x0) = den.predict(&x, s)?;
        if t == 0.0 {
            // The last step is first order: lambda_t = inf, so x_t = x0.
            x = x0;
            break;
        }
        // lambda = log(alpha / (alpha sigma)) = -ln sigma; h = ln(s / t).
        let h = (s / t).ln();
        let (alpha_t, alpha_s) = (alpha_of(t), alpha_of(s));
        // x0 estimate D: first order at the first step, else the midpoint
        // combination D0 + (1 / 2r) (D0 - D1) with r = h_prev / h.
        let d = match &prev {
            None => x0.clone(),
            Some((x0_prev, h_prev)) => {
                let c = 0.5 * h / h_prev;
                ops::add_scaled(&ops::scale(&x0, 1.0 + c)?, x0_prev, -c)?
            }
        };
        // The ratio of the VP sigmas: (alpha_t t) / (alpha_s s).
        let ratio = alpha_t * t / (alpha_s * s);
        let e = (-h).exp();
        x = match noise.as_deref_mut() {
            None => ops::add_scaled(&ops::scale(&x, ratio)?, &d, alpha_t * (1.0 - e))?,
            Some(src) => {
                let e2 = (-2.0 * h).exp();
                let mean = ops::add_scaled(&ops::scale(&x, ratio * e)?, &d, alpha_t * (1.0 - e2))?;
                src.add_noise(&mean, alpha_t * t * (1.0 - e2).sqrt(), i)?
            }
        };
        prev = Some((x0, h));
    }
    Ok(x)
}

/// Heun's method on dz/dsigma = eps in the scale z = x / alpha = x0 + sigma
/// eps, from sigmas[0] to sigmas.last(); an Euler step to sigma = 0.
pub fn heun(
    den: &mut dyn Denoiser,
    x: &Tensor,
    sigmas: &[f64],
    mut before_step: impl FnMut(usize, &Tensor) -> Result<()>,
) -> Result<Tensor> {
    check_levels(sigmas)?;
    // z = x / alpha(sigma).
    let mut z = ops::scale(x, 1.0 / alpha_of(sigmas[0]))?;
    for i in 0..sigmas.len() - 1 {
        let (s, t) = (sigmas[i], sigmas[i + 1]);
        let x_s = ops::scale(&z, alpha_of(s))?;
        before_step(i, &x_s)?;
        let (eps, _) = den.predict(&x_s, s)?;
        let euler = ops::add_scaled(&z, &eps, t - s)?;
        if t == 0.0 {
            z = euler;
            break;
        }
        let (eps2, _) = den.predict(&ops::scale(&euler, alpha_of(t))?, t)?;
        z = ops::add_scaled(&z, &ops::add(&eps, &eps2)?, 0.5 * (t - s))?;
    }
    Ok(ops::scale(&z, alpha_of(sigmas[sigmas.len() - 1]))?)
}
