//! Launch code of kernels/loss.cu: MSE forward (f64 chunk partials, then one
//! block combining them in a fixed order) and backward.

use super::{alloc, alloc_f64, grid_for, run, u64_arg};
use crate::gpu::kernels;
use crate::gpu::{Dim3, GpuDevice, GpuStorage, KernelArg};
use crate::Result;

/// Elements per partial sum (the CPU's REDUCE_CHUNK; LOSS_CHUNK in loss.cu).
pub const LOSS_CHUNK: usize = 4096;

/// loss [1] = mean((pred - target)^2), accumulated in f64; `pred` is not
/// empty (checked by the caller).
pub fn mse_loss_forward(dev: &GpuDevice, pred: &GpuStorage, target: &GpuStorage) -> Result<GpuStorage> {
    let n = pred.len();
    let chunks = n.div_ceil(LOSS_CHUNK);
    let loss = alloc(dev, 1)?;
    if n == 0 {
        dev.driver().memset_zero(loss.ptr(), 4)?;
        return Ok(loss);
    }
    let partials = alloc_f64(dev, chunks)?;
    let grid = Dim3::x(
        u32::try_from(chunks).map_err(|_| crate::TensorError::invalid("mse_loss_forward", "tensor too large"))?,
    );
    run(dev, &kernels::loss::MSE_LOSS_PARTIAL_F32, grid, &[partials.arg(), pred.arg(), target.arg(), u64_arg(n)])?;
    run(
        dev,
        &kernels::loss::MSE_LOSS_FINAL_F32,
        Dim3::x(1),
        &[loss.arg(), partials.arg(), KernelArg::U32(chunks as u32), u64_arg(n)],
    )?;
    Ok(loss)
}

/// dpred = dloss * 2 (pred - target) / numel, the factor formed in f64 and
/// rounded to f32 as the CPU does.
pub fn mse_loss_backward(dev: &GpuDevice, pred: &GpuStorage, target: &GpuStorage, dloss: f64) -> Result<GpuStorage> {
    let n = pred.len();
    let dpred = alloc(dev, n)?;
    if n > 0 {
        let c = (2.0 * dloss / n as f64) as f32;
        run(
            dev,
            &kernels::loss::MSE_LOSS_BWD_F32,
            grid_for(n as u64),
            &[dpred.arg(), pred.arg(), target.arg(), KernelArg::F32(c), u64_arg(n)],
        )?;
    }
    Ok(dpred)
}
