//! Denoising: a noisy image is taken as x_t at the timestep with the same
//! noise level (see [`super::noise_level`]) and the reverse process runs from
//! there to x_0.

use super::noise_level::scale_to_timestep;
use super::ADDED_NOISE_STREAM;
use crate::diffusion::Diffusion;
use crate::sampler::{reverse_from, timesteps_from, Sampler};
use crate::Result;
use diffuse_tensor::{ops, DType, Device, Tensor};
use diffuse_unet::UNet;

/// `clean + 2 sigma n` (model units, i.e. noise of `sigma` in `[0, 1]` pixel
/// units), `n` from Philox (seed, image index): the same noise on every
/// device and whatever the batch. Not clipped, as the Gaussian model assumes.
pub fn add_pixel_noise(clean: &Tensor, sigma: f64, seed: u64, first_image: u32) -> Result<Tensor> {
    let n = clean.dims()[0];
    let per = clean.numel() / n.max(1);
    let cpu = clean.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let one = Tensor::full([1], 1.0, DType::F32, &Device::Cpu)?;
    let amp = Tensor::full([1], 2.0 * sigma, DType::F32, &Device::Cpu)?;
    let values = cpu.to_vec_f32()?;
    let mut out = Vec::with_capacity(values.len());
    for (i, img) in values.chunks_exact(per).enumerate() {
        // Philox step = the image's index: image k gets the same noise
        // however the images are batched.
        let x = Tensor::from_slice(img, [1, per])?;
        let noisy = ops::noise_add(&x, &one, &amp, seed, first_image + i as u32, ADDED_NOISE_STREAM)?.x_t;
        out.extend(noisy.to_vec_f32()?);
    }
    Ok(Tensor::from_vec(out, clean.dims().to_vec())?.to_device(&clean.device())?)
}

/// Denoises `noisy` (model units, `x0 + noise`) taken at timestep `t`: scales
/// it to x_t, then runs `sampler` from t to 0 (x0 clipped to [-1, 1] at each
/// step). Returns the estimate of x0, same shape and device.
pub fn denoise(
    model: &UNet,
    d: &Diffusion,
    noisy: &Tensor,
    t: usize,
    sampler: Sampler,
    seed: u64,
    on_step: impl FnMut(usize, usize),
) -> Result<Tensor> {
    let ts = timesteps_from(d, sampler, t)?;
    let x_t = ops::scale(noisy, scale_to_timestep(d, t))?;
    reverse_from(model, d, sampler, true, &x_t, &ts, seed, on_step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_noise_has_the_asked_deviation_and_does_not_depend_on_batching() {
        let clean = Tensor::randn([6, 1, 20, 20], 5, 0, DType::F32, &Device::Cpu).unwrap();
        let noisy = add_pixel_noise(&clean, 0.3, 9, 0).unwrap();
        let (c, y) = (clean.to_vec_f32().unwrap(), noisy.to_vec_f32().unwrap());
        let n = c.len() as f64;
        let d: Vec<f64> = c.iter().zip(&y).map(|(a, b)| (*b - *a) as f64).collect();
        let mean = d.iter().sum::<f64>() / n;
        let std = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        // 2400 draws: the std of the std estimate is about 0.6 / sqrt(4800).
        assert!((std - 0.6).abs() < 0.04 && mean.abs() < 0.05, "std {std} mean {mean}");
        // Images 2..6 alone, numbered from 2, get the same noise.
        let tail = Tensor::from_slice(&c[2 * 400..], [4, 1, 20, 20]).unwrap();
        let y2 = add_pixel_noise(&tail, 0.3, 9, 2).unwrap().to_vec_f32().unwrap();
        assert_eq!(&y[2 * 400..], &y2[..]);
    }
}
