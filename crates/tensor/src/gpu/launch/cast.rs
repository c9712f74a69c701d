//! Launch code of kernels/cast.cu: f32 <-> bf16 storage.

use super::{grid_for, run, u64_arg};
use crate::gpu::kernels;
use crate::gpu::{GpuDevice, GpuStorage};
use crate::Result;

/// y = bf16(x), nearest even; one thread per pair of elements.
pub fn round_to_bf16(dev: &GpuDevice, x: &GpuStorage) -> Result<GpuStorage> {
    let n = x.len();
    let y = dev.alloc_bf16(n)?;
    if n > 0 {
        run(dev, &kernels::cast::CAST_ROUND_BF16, grid_for(n.div_ceil(2) as u64), &[y.arg(), x.arg(), u64_arg(n)])?;
    }
    Ok(y)
}

/// y = f32(x), exact.
pub fn widen_to_f32(dev: &GpuDevice, x: &GpuStorage) -> Result<GpuStorage> {
    let n = x.len();
    let y = dev.alloc_f32(n)?;
    if n > 0 {
        run(dev, &kernels::cast::CAST_WIDEN_F32, grid_for(n as u64), &[y.arg(), x.arg(), u64_arg(n)])?;
    }
    Ok(y)
}
