//! Launch code of kernels/silu.cu.

use super::{alloc, grid_for, run, u64_arg};
use crate::gpu::kernels;
use crate::gpu::{GpuDevice, GpuStorage};
use crate::Result;

/// y = x * sigmoid(x).
pub fn silu_forward(dev: &GpuDevice, x: &GpuStorage) -> Result<GpuStorage> {
    let n = x.len();
    let y = alloc(dev, n)?;
    if n > 0 {
        run(dev, &kernels::silu::SILU_FWD_F32, grid_for(n as u64), &[y.arg(), x.arg(), u64_arg(n)])?;
    }
    Ok(y)
}

/// dx = dy * silu'(x); `dy` and `x` have the same length.
pub fn silu_backward(dev: &GpuDevice, dy: &GpuStorage, x: &GpuStorage) -> Result<GpuStorage> {
    let n = x.len();
    let dx = alloc(dev, n)?;
    if n > 0 {
        run(dev, &kernels::silu::SILU_BWD_F32, grid_for(n as u64), &[dx.arg(), dy.arg(), x.arg(), u64_arg(n)])?;
    }
    Ok(dx)
}
