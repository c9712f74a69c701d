//! Launch code of kernels/dropout.cu. The mask is regenerated from
//! (seed, step, stream) in both passes, never stored.

use super::{alloc, grid_for, run, u64_arg};
use crate::gpu::kernels;
use crate::gpu::{GpuDevice, GpuStorage, KernelArg};
use crate::philox::{self, PhiloxStep};
use crate::Result;

#[allow(clippy::too_many_arguments)]
fn apply(
    kernel: &'static kernels::Kernel,
    dev: &GpuDevice,
    x: &GpuStorage,
    p: f32,
    seed: u64,
    step: PhiloxStep,
    stream: u32,
    offset: u64,
) -> Result<GpuStorage> {
    let n = x.len();
    let out = alloc(dev, n)?;
    if n > 0 {
        let threshold = philox::mask_threshold(p);
        let scale = (1.0 / (1.0 - p as f64)) as f32;
        let args = [
            out.arg(),
            x.arg(),
            u64_arg(n),
            KernelArg::U64(seed),
            KernelArg::U32(step.value),
            KernelArg::U32(stream),
            KernelArg::U32(threshold),
            KernelArg::F32(scale),
            KernelArg::U64(offset),
            KernelArg::Ptr(step.at.unwrap_or(0)),
        ];
        let per = philox::MASK_ELEMENTS_PER_BLOCK;
        let blocks = (offset + n as u64).div_ceil(per) - offset / per;
        run(dev, kernel, grid_for(blocks), &args)?;
    }
    Ok(out)
}

/// y = keep(i) ? x / (1 - p) : 0 with the Philox mask of (seed, step,
/// stream) at elements offset + i.
#[allow(clippy::too_many_arguments)]
pub fn dropout_forward(
    dev: &GpuDevice,
    x: &GpuStorage,
    p: f32,
    seed: u64,
    step: PhiloxStep,
    stream: u32,
    offset: u64,
) -> Result<GpuStorage> {
    apply(&kernels::dropout::DROPOUT_FWD_F32, dev, x, p, seed, step, stream, offset)
}

/// dx = keep(i) ? dy / (1 - p) : 0, the same mask as the forward.
#[allow(clippy::too_many_arguments)]
pub fn dropout_backward(
    dev: &GpuDevice,
    dy: &GpuStorage,
    p: f32,
    seed: u64,
    step: PhiloxStep,
    stream: u32,
    offset: u64,
) -> Result<GpuStorage> {
    apply(&kernels::dropout::DROPOUT_BWD_F32, dev, dy, p, seed, step, stream, offset)
}
