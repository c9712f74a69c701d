//! Image to image by SDEdit (Meng et al. 2022): noise the input to
//! t = s T with the forward process, then run the reverse process back to
//! x_0. Strength 0 returns the input; 1 starts from (almost) pure noise.

use super::SDEDIT_STREAM;
use crate::diffusion::Diffusion;
use crate::sampler::{reverse_from, timesteps_from, Sampler};
use crate::{Error, Result};
use diffuse_tensor::{DType, Tensor};
use diffuse_unet::UNet;

/// The timestep SDEdit starts from: `ceil(s T) - 1`, or `None` for a
/// strength so small that no step is taken. `s` must be in [0, 1].
pub fn start_timestep(strength: f64, timesteps: usize) -> Result<Option<usize>> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(Error::InvalidArgument(format!("strength must be in [0, 1], got {strength}")));
    }
    // The small slack keeps 0.7 T from rounding up past 700 (0.7 * 1000 is 700.0000000000001).
    let k = (strength * timesteps as f64 - 1e-9).ceil().max(0.0) as usize;
    Ok(k.checked_sub(1).map(|t| t.min(timesteps - 1)))
}

/// SDEdit of `x0` (model units) at `strength`: q_sample to the start
/// timestep with Philox noise of `seed`, then `sampler` down to 0.
pub fn img2img(
    model: &UNet,
    d: &Diffusion,
    x0: &Tensor,
    strength: f64,
    sampler: Sampler,
    seed: u64,
    on_step: impl FnMut(usize, usize),
) -> Result<Tensor> {
    let Some(t) = start_timestep(strength, d.timesteps)? else {
        return Ok(x0.clone());
    };
    let n = x0.dims()[0];
    let dev = x0.device();
    let a = Tensor::full([n], d.abar(t as isize).sqrt(), DType::F32, &dev)?;
    let b = Tensor::full([n], (1.0 - d.abar(t as isize)).sqrt(), DType::F32, &dev)?;
    let x_t = diffuse_tensor::ops::noise_add(x0, &a, &b, seed, 0, SDEDIT_STREAM)?.x_t;
    let ts = timesteps_from(d, sampler, t)?;
    reverse_from(model, d, sampler, true, &x_t, &ts, seed, on_step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_maps_to_timesteps() {
        assert_eq!(start_timestep(0.0, 1000).unwrap(), None);
        assert_eq!(start_timestep(0.0004, 1000).unwrap(), Some(0));
        assert_eq!(start_timestep(0.5, 1000).unwrap(), Some(499));
        assert_eq!(start_timestep(0.7, 1000).unwrap(), Some(699));
        assert_eq!(start_timestep(1.0, 1000).unwrap(), Some(999));
        for s in [-0.1, 1.01, f64::NAN] {
            assert!(start_timestep(s, 1000).is_err(), "{s}");
        }
    }
}
