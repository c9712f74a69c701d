//! Inverted dropout with a Philox mask that backward regenerates from
//! (seed, step, stream) instead of storing it.

use crate::cpu::dropout as kernels;
use crate::gpu::launch;
use crate::philox::PhiloxStep;
use crate::{with_element, Result, Storage, Tensor, TensorError};

/// y[i] = x[i] / (1 - p) where element i is kept, else 0; element i is kept
/// iff `philox::keep_mask(philox::mask_bits(seed, step, stream, i), philox::mask_threshold(p))`.
pub fn dropout_forward(x: &Tensor, p: f32, seed: u64, step: u32, stream: u32) -> Result<Tensor> {
    masked("dropout_forward", false, x, p, seed, step.into(), stream, 0)
}

/// [`dropout_forward`] of elements [offset, offset + len) of a larger
/// tensor: a shard of a batch (data parallelism) keeps the batch's mask.
/// A GPU kernel reads the step from device memory where `step.at` is set
/// ([`PhiloxStep`]: training graphs).
pub fn dropout_forward_at(
    x: &Tensor,
    p: f32,
    seed: u64,
    step: impl Into<PhiloxStep>,
    stream: u32,
    offset: u64,
) -> Result<Tensor> {
    masked("dropout_forward", false, x, p, seed, step.into(), stream, offset)
}

/// The backward of [`dropout_forward_at`].
pub fn dropout_backward_at(
    dy: &Tensor,
    p: f32,
    seed: u64,
    step: impl Into<PhiloxStep>,
    stream: u32,
    offset: u64,
) -> Result<Tensor> {
    masked("dropout_backward", true, dy, p, seed, step.into(), stream, offset)
}

/// dx = dy masked and scaled exactly as the forward with the same arguments.
pub fn dropout_backward(dy: &Tensor, p: f32, seed: u64, step: u32, stream: u32) -> Result<Tensor> {
    masked("dropout_backward", true, dy, p, seed, step.into(), stream, 0)
}

/// Forward and backward are the same diagonal map (its own adjoint).
#[allow(clippy::too_many_arguments)]
fn masked(
    op: &'static str,
    backward: bool,
    x: &Tensor,
    p: f32,
    seed: u64,
    step: PhiloxStep,
    stream: u32,
    offset: u64,
) -> Result<Tensor> {
    let _timer = crate::profile::op(op);
    // `contains` is false for NaN too
    if !(0.0..1.0).contains(&p) {
        return Err(TensorError::invalid(op, format!("dropout probability must be in [0, 1), got {p}")));
    }
    match x.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut y = crate::cpu::recycle::output::<T>(x.numel());
            kernels::apply_mask_at(x.cpu_slice::<T>()?, p, seed, step.value, stream, offset, &mut y);
            Ok(Tensor::from_cpu(x.shape().clone(), y))
        }),
        Storage::Gpu(g) => {
            let y = if backward {
                launch::dropout::dropout_backward(g.device(), g, p, seed, step, stream, offset)?
            } else {
                launch::dropout::dropout_forward(g.device(), g, p, seed, step, stream, offset)?
            };
            Ok(Tensor::from_gpu(x.shape().clone(), y))
        }
    }
}
