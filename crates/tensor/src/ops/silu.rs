//! SiLU forward and backward.

use super::{check_same, check_same_shape, gpu_of};
use crate::gpu::launch;
use crate::{cpu, with_element, Result, Storage, Tensor};

/// y = x * sigmoid(x), elementwise.
pub fn silu_forward(x: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("silu_forward");
    match x.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let xs = x.cpu_slice::<T>()?;
            let mut y = crate::cpu::recycle::output::<T>(xs.len());
            cpu::silu::silu_forward(xs, &mut y);
            Ok(Tensor::from_cpu(x.shape().clone(), y))
        }),
        Storage::Gpu(g) => Ok(Tensor::from_gpu(x.shape().clone(), launch::silu::silu_forward(g.device(), g)?)),
    }
}

/// dx = dy * silu'(x).
pub fn silu_backward(dy: &Tensor, x: &Tensor) -> Result<Tensor> {
    let _timer = crate::profile::op("silu_backward");
    check_same("silu_backward", &[dy, x])?;
    check_same_shape("silu_backward", x, dy)?;
    match x.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut dx = crate::cpu::recycle::output::<T>(x.numel());
            cpu::silu::silu_backward(dy.cpu_slice::<T>()?, x.cpu_slice::<T>()?, &mut dx);
            Ok(Tensor::from_cpu(x.shape().clone(), dx))
        }),
        Storage::Gpu(g) => {
            let dx = launch::silu::silu_backward(g.device(), gpu_of("silu_backward", dy)?, g)?;
            Ok(Tensor::from_gpu(x.shape().clone(), dx))
        }
    }
}
