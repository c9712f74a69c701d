//! Per-sample scaling (diffusion targets with one timestep per image) and
//! clamping (the samplers' x0 clipping).

use super::{check_same, gpu_of};
use crate::gpu::launch;
use crate::{cpu, with_element, Element, Result, Storage, Tensor, TensorError};

/// y[n] = x[n] * s[n] for every sample n of x ([N, ...]), s of shape [N].
pub fn scale_per_sample(x: &Tensor, s: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("scale_per_sample");
    check_same("scale_per_sample", &[x, s])?;
    let n = x.dims().first().copied().unwrap_or(0);
    if s.dims() != [n] {
        return Err(TensorError::shape("scale_per_sample", format!("[{n}] (one scale per sample)"), s.shape()));
    }
    match x.storage() {
        Storage::Cpu(st) => with_element!(st.dtype(), T, {
            let mut y = crate::cpu::recycle::output::<T>(x.numel());
            if n > 0 {
                cpu::sampling::scale_per_sample(x.cpu_slice::<T>()?, s.cpu_slice::<T>()?, &mut y);
            } else {
                // no samples: zeros, as the GPU gives
                y.fill(T::from_f64(0.0));
            }
            Ok(Tensor::from_cpu(x.shape().clone(), y))
        }),
        Storage::Gpu(g) => {
            // no samples (a rank-0 x with an empty s): zeros, as the CPU leaves them
            let y = match x.numel().checked_div(n) {
                None => g.device().zeros_f32(x.numel())?,
                Some(per_sample) => {
                    launch::sampling::scale_per_sample(g.device(), g, gpu_of("scale_per_sample", s)?, per_sample)?
                }
            };
            Ok(Tensor::from_gpu(x.shape().clone(), y))
        }
    }
}

/// Elementwise clamp to [lo, hi].
pub fn clamp(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    let _timer = crate::profile::op("clamp");
    if lo > hi || lo.is_nan() || hi.is_nan() {
        return Err(TensorError::invalid("clamp", format!("empty range [{lo}, {hi}]")));
    }
    match x.storage() {
        Storage::Cpu(st) => with_element!(st.dtype(), T, {
            let mut y = crate::cpu::recycle::output::<T>(x.numel());
            cpu::sampling::clamp(x.cpu_slice::<T>()?, T::from_f64(lo), T::from_f64(hi), &mut y);
            Ok(Tensor::from_cpu(x.shape().clone(), y))
        }),
        Storage::Gpu(g) => Ok(Tensor::from_gpu(x.shape().clone(), launch::sampling::clamp(g.device(), g, lo, hi)?)),
    }
}
