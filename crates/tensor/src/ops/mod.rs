//! The public ops. Each function checks shapes, dtypes and devices (clear
//! errors, no panics), then dispatches to `cpu::*` or the GPU launch code.
//! Backward functions are explicit; there is no tape.

pub mod attention;
pub mod cast;
pub mod conv2d;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod flat;
pub mod group_norm;
pub mod layout;
pub mod linear;
pub mod loss;
pub mod noise;
pub mod optim;
pub mod sampling;
pub mod silu;

pub use attention::*;
pub use cast::*;
pub use conv2d::*;
pub use dropout::*;
pub use elementwise::*;
pub use embedding::*;
pub use flat::*;
pub use group_norm::*;
pub use layout::*;
pub use linear::*;
pub use loss::*;
pub use noise::*;
pub use optim::*;
pub use sampling::*;
pub use silu::*;

use crate::gpu::GpuStorage;
use crate::{Result, Storage, Tensor, TensorError};

/// Error unless every tensor shares the first one's device and dtype.
pub(crate) fn check_same(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    let Some(first) = ts.first() else { return Ok(()) };
    let dev = first.device();
    for t in &ts[1..] {
        if t.dtype() != first.dtype() {
            return Err(TensorError::DTypeMismatch { op, a: first.dtype(), b: t.dtype() });
        }
        let d = t.device();
        if !d.same(&dev) {
            return Err(TensorError::DeviceMismatch { op, a: dev.to_string(), b: d.to_string() });
        }
    }
    Ok(())
}

/// As [`check_same`] over `x` and `rest`, except that `x` may be a bf16
/// GPU tensor beside f32 ones: an activation kept in bf16 for a tensor-core
/// product (the launch code checks the precision).
pub(crate) fn check_same_bf16_input(op: &'static str, x: &Tensor, rest: &[&Tensor]) -> Result<()> {
    check_same(op, rest)?;
    let Some(first) = rest.first() else { return Ok(()) };
    if x.dtype() == crate::DType::BF16 && first.dtype() == crate::DType::F32 {
        let (a, b) = (first.device(), x.device());
        if !a.same(&b) {
            return Err(TensorError::DeviceMismatch { op, a: a.to_string(), b: b.to_string() });
        }
        return Ok(());
    }
    check_same(op, &[x, first])
}

/// Error unless `a` and `b` have the same shape.
pub(crate) fn check_same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(TensorError::shape(op, format!("{} (the first operand's shape)", a.shape()), b.shape()));
    }
    Ok(())
}

/// The GPU buffer of an operand of a GPU op. Callers have checked (with
/// `check_same`) that it shares the first operand's device, so this fails
/// only for a host tensor passed where that check does not apply.
pub(crate) fn gpu_of<'a>(op: &'static str, t: &'a Tensor) -> Result<&'a GpuStorage> {
    match t.storage() {
        Storage::Gpu(g) => Ok(g),
        Storage::Cpu(_) => Err(TensorError::Unsupported {
            op,
            device: "cpu".into(),
            why: "every operand of a GPU op must live on that GPU".into(),
        }),
    }
}

/// The GPU buffer of the output operand of an in-place GPU op.
pub(crate) fn gpu_of_mut<'a>(op: &'static str, t: &'a mut Tensor) -> Result<&'a mut GpuStorage> {
    match t.storage_mut() {
        Storage::Gpu(g) => Ok(g),
        Storage::Cpu(_) => Err(TensorError::Unsupported {
            op,
            device: "cpu".into(),
            why: "every operand of a GPU op must live on that GPU".into(),
        }),
    }
}
