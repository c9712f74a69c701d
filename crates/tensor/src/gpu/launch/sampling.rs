//! Launch code of kernels/sampling.cu: per-sample scaling and clamping.

use super::{alloc, grid_for, run, u64_arg};
use crate::gpu::kernels;
use crate::gpu::{GpuDevice, GpuStorage, KernelArg};
use crate::Result;

/// y[i] = x[i] * s[i / per_sample]: x [N, ...] with `per_sample` elements
/// per sample, s [N].
pub fn scale_per_sample(dev: &GpuDevice, x: &GpuStorage, s: &GpuStorage, per_sample: usize) -> Result<GpuStorage> {
    let n = x.len();
    let y = alloc(dev, n)?;
    if n > 0 && per_sample > 0 {
        run(
            dev,
            &kernels::sampling::SCALE_PER_SAMPLE_FWD_F32,
            grid_for(n as u64),
            &[y.arg(), x.arg(), s.arg(), u64_arg(per_sample), u64_arg(n)],
        )?;
    }
    Ok(y)
}

/// y = clamp(x, lo, hi) with lo, hi rounded to f32; NaN stays NaN.
pub fn clamp(dev: &GpuDevice, x: &GpuStorage, lo: f64, hi: f64) -> Result<GpuStorage> {
    let n = x.len();
    let y = alloc(dev, n)?;
    if n > 0 {
        let args = [y.arg(), x.arg(), KernelArg::F32(lo as f32), KernelArg::F32(hi as f32), u64_arg(n)];
        run(dev, &kernels::sampling::CLAMP_FWD_F32, grid_for(n as u64), &args)?;
    }
    Ok(y)
}
