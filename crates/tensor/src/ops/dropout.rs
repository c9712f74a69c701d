//! Inverted dropout with a Philox mask that backward regenerates from
//! (seed, step, stream) instead of storing it.

use crate::cpu::dropout as kernels;
use crate::gpu::launch;
use crate::{with_element, Result, Storage, Tensor, TensorError};

/// y[i] = x[i] / (1 - p) where element i is kept, else 0; element i is kept
/// iff `philox::keep(philox::bits(seed, step, stream, i), philox::dropout_threshold(p))`.
pub fn dropout_forward(x: &Tensor, p: f32, seed: u64, step: u32, stream: u32) -> Result<Tensor> {
    let _timer = crate::profile::op("dropout_forward");
    masked("dropout_forward", false, x, p, seed, step, stream)
}

/// dx = dy masked and scaled exactly as the forward with the same arguments.
pub fn dropout_backward(dy: &Tensor, p: f32, seed: u64, step: u32, stream: u32) -> Result<Tensor> {
    let _timer = crate::profile::op("dropout_backward");
    masked("dropout_backward", true, dy, p, seed, step, stream)
}

/// Forward and backward are the same diagonal map (its own adjoint).
fn masked(op: &'static str, backward: bool, x: &Tensor, p: f32, seed: u64, step: u32, stream: u32) -> Result<Tensor> {
    // `contains` is false for NaN too
    if !(0.0..1.0).contains(&p) {
        return Err(TensorError::invalid(op, format!("dropout probability must be in [0, 1), got {p}")));
    }
    match x.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut y = vec![T::default(); x.numel()];
            kernels::apply_mask(x.cpu_slice::<T>()?, p, seed, step, stream, &mut y);
            Ok(Tensor::from_cpu(x.shape().clone(), y))
        }),
        Storage::Gpu(g) => {
            let y = if backward {
                launch::dropout::dropout_backward(g.device(), g, p, seed, step, stream)?
            } else {
                launch::dropout::dropout_forward(g.device(), g, p, seed, step, stream)?
            };
            Ok(Tensor::from_gpu(x.shape().clone(), y))
        }
    }
}
