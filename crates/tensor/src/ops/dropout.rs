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

/// Where a dropout draws its mask: its probability, the Philox coordinates
/// and the mask index of the tensor's first element (as the arguments of
/// [`dropout_forward_at`]), for the ops that fuse a dropout into their pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutAt {
    pub p: f32,
    pub seed: u64,
    pub step: PhiloxStep,
    pub stream: u32,
    pub offset: u64,
}

impl DropoutAt {
    /// Checks the probability (an error names `op`) and returns the CPU
    /// masking arguments.
    pub(crate) fn cpu_args(&self, op: &'static str) -> Result<kernels::MaskArgs> {
        check_probability(op, self.p)?;
        Ok(kernels::MaskArgs { p: self.p, seed: self.seed, step: self.step.value, stream: self.stream })
    }

    /// [`dropout_forward_at`] with these arguments.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        dropout_forward_at(x, self.p, self.seed, self.step, self.stream, self.offset)
    }

    /// [`dropout_forward_keeping_mask`] with these arguments.
    pub fn forward_keeping_mask(&self, x: &Tensor) -> Result<(Tensor, Option<DropoutMask>)> {
        dropout_forward_keeping_mask(x, self.p, self.seed, self.step, self.stream, self.offset)
    }
}

/// The keep mask a CPU dropout forward drew, one bit an element: a backward
/// right after it ([`dropout_backward_with_mask`]) applies it instead of
/// drawing the Philox words again (the same values, without the draw).
pub struct DropoutMask {
    pub(crate) keep: Vec<u64>,
    pub(crate) len: usize,
    pub(crate) p: f32,
}

impl DropoutMask {
    /// A mask of `len` elements from its keep bits (`cpu::dropout::keep_words(len)` words).
    pub(crate) fn from_keep_bits(keep: Vec<u64>, len: usize, p: f32) -> Self {
        debug_assert_eq!(keep.len(), kernels::keep_words(len));
        DropoutMask { keep, len, p }
    }
}

/// [`dropout_forward_at`] that also returns the keep mask where it is cheap
/// to keep (on the CPU; `None` on a GPU, whose backward draws it again).
pub fn dropout_forward_keeping_mask(
    x: &Tensor,
    p: f32,
    seed: u64,
    step: impl Into<PhiloxStep>,
    stream: u32,
    offset: u64,
) -> Result<(Tensor, Option<DropoutMask>)> {
    let Storage::Cpu(s) = x.storage() else {
        return Ok((dropout_forward_at(x, p, seed, step, stream, offset)?, None));
    };
    let _timer = crate::profile::op("dropout_forward");
    check_probability("dropout_forward", p)?;
    let step = step.into();
    with_element!(s.dtype(), T, {
        let mut y = crate::cpu::recycle::output::<T>(x.numel());
        let mut keep = vec![0u64; kernels::keep_words(x.numel())];
        kernels::apply_mask_keeping_bits(x.cpu_slice::<T>()?, p, seed, step.value, stream, offset, &mut y, &mut keep);
        Ok((Tensor::from_cpu(x.shape().clone(), y), Some(DropoutMask { keep, len: x.numel(), p })))
    })
}

/// The backward of the forward that returned `mask`: dy masked and scaled
/// by it. A CPU tensor of the forward's size.
pub fn dropout_backward_with_mask(dy: &Tensor, mask: &DropoutMask) -> Result<Tensor> {
    const OP: &str = "dropout_backward";
    let _timer = crate::profile::op(OP);
    if dy.numel() != mask.len {
        return Err(TensorError::invalid(
            OP,
            format!("gradient of {} elements for a mask of {}", dy.numel(), mask.len),
        ));
    }
    let Storage::Cpu(s) = dy.storage() else {
        return Err(TensorError::invalid(OP, "a kept dropout mask applies to CPU tensors only"));
    };
    with_element!(s.dtype(), T, {
        let mut dx = crate::cpu::recycle::output::<T>(dy.numel());
        kernels::apply_keep_bits(dy.cpu_slice::<T>()?, mask.p, &mask.keep, &mut dx);
        Ok(Tensor::from_cpu(dy.shape().clone(), dx))
    })
}

fn check_probability(op: &'static str, p: f32) -> Result<()> {
    // `contains` is false for NaN too
    if !(0.0..1.0).contains(&p) {
        return Err(TensorError::invalid(op, format!("dropout probability must be in [0, 1), got {p}")));
    }
    Ok(())
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
    check_probability(op, p)?;
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
