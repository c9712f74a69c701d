//! The forward diffusion (noising) step of DDPM training:
//! x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps with eps drawn from Philox.

use super::{check_same, gpu_of};
use crate::cpu::noise as kernels;
use crate::gpu::launch;
use crate::philox::PhiloxStep;
use crate::{with_element, Result, Storage, Tensor, TensorError};

/// The noised batch and the noise it was made with (the training target).
#[derive(Clone, Debug)]
pub struct NoiseAddOutput {
    pub x_t: Tensor,
    pub eps: Tensor,
}

/// x0 [N, ...], sqrt_abar [N], sqrt_one_minus_abar [N]:
/// eps[i] = philox::normal(seed, step, stream, i) over the flat index of x0,
/// x_t = sqrt_abar[n] * x0 + sqrt_one_minus_abar[n] * eps.
pub fn noise_add(
    x0: &Tensor,
    sqrt_abar: &Tensor,
    sqrt_one_minus_abar: &Tensor,
    seed: u64,
    step: u32,
    stream: u32,
) -> Result<NoiseAddOutput> {
    noise_add_at(x0, sqrt_abar, sqrt_one_minus_abar, seed, step, stream, 0)
}

/// [`noise_add`] with the noise of elements [offset, offset + len) of the
/// draw: a shard of a batch (data parallelism) gets the batch's own noise.
/// A GPU kernel reads the step from device memory where `step.at` is set
/// ([`PhiloxStep`]: training graphs); the CPU uses its value.
#[allow(clippy::too_many_arguments)]
pub fn noise_add_at(
    x0: &Tensor,
    sqrt_abar: &Tensor,
    sqrt_one_minus_abar: &Tensor,
    seed: u64,
    step: impl Into<PhiloxStep>,
    stream: u32,
    offset: u64,
) -> Result<NoiseAddOutput> {
    let _timer = crate::profile::op("noise_add");
    const OP: &str = "noise_add";
    let step = step.into();
    check_same(OP, &[x0, sqrt_abar, sqrt_one_minus_abar])?;
    let n = batch_size(OP, x0)?;
    sqrt_abar.shape().expect(OP, &[n])?;
    sqrt_one_minus_abar.shape().expect(OP, &[n])?;
    let per_sample = x0.numel() / n.max(1);
    match x0.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut eps = crate::cpu::recycle::output::<T>(x0.numel());
            kernels::fill_normal_at(&mut eps, seed, step.value, stream, offset);
            let mut x_t = crate::cpu::recycle::output::<T>(x0.numel());
            let (a, b) = (sqrt_abar.cpu_slice::<T>()?, sqrt_one_minus_abar.cpu_slice::<T>()?);
            kernels::noise_mix(x0.cpu_slice::<T>()?, &eps, a, b, per_sample, &mut x_t);
            Ok(NoiseAddOutput {
                x_t: Tensor::from_cpu(x0.shape().clone(), x_t),
                eps: Tensor::from_cpu(x0.shape().clone(), eps),
            })
        }),
        Storage::Gpu(g) => {
            let (a, b) = (gpu_of(OP, sqrt_abar)?, gpu_of(OP, sqrt_one_minus_abar)?);
            let (x_t, eps) = launch::noise::noise_add(g.device(), g, a, b, per_sample, seed, step, stream, offset)?;
            Ok(NoiseAddOutput {
                x_t: Tensor::from_gpu(x0.shape().clone(), x_t),
                eps: Tensor::from_gpu(x0.shape().clone(), eps),
            })
        }
    }
}

/// dx0 = sqrt_abar[n] * dx_t (eps is independent of x0).
pub fn noise_add_backward(dx_t: &Tensor, sqrt_abar: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("noise_add_backward");
    const OP: &str = "noise_add_backward";
    check_same(OP, &[dx_t, sqrt_abar])?;
    let n = batch_size(OP, dx_t)?;
    sqrt_abar.shape().expect(OP, &[n])?;
    let per_sample = dx_t.numel() / n.max(1);
    match dx_t.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut dx0 = crate::cpu::recycle::output::<T>(dx_t.numel());
            kernels::noise_add_backward(dx_t.cpu_slice::<T>()?, sqrt_abar.cpu_slice::<T>()?, per_sample, &mut dx0);
            Ok(Tensor::from_cpu(dx_t.shape().clone(), dx0))
        }),
        Storage::Gpu(g) => {
            let dx0 = launch::noise::noise_add_backward(g.device(), g, gpu_of(OP, sqrt_abar)?, per_sample)?;
            Ok(Tensor::from_gpu(dx_t.shape().clone(), dx0))
        }
    }
}

/// N, the leading dim of a batch tensor of rank >= 1.
fn batch_size(op: &'static str, x: &Tensor) -> Result<usize> {
    x.dims().first().copied().ok_or_else(|| TensorError::shape(op, "a batch [N, ...] of rank at least 1", x.shape()))
}
