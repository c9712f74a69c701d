//! Launch code of kernels/layout.cu: nearest 2x upsampling, channel concat
//! and split, and the per-(sample, channel) bias add and its gradient.

use super::{alloc, check_i32, grid_for, run, u64_arg, BLOCK};
use crate::gpu::kernels;
use crate::gpu::{Dim3, GpuDevice, GpuStorage};
use crate::Result;

/// y [planes, 2h, 2w] from x [planes, h, w] (planes = N * C).
pub fn upsample_nearest2x_forward(
    dev: &GpuDevice,
    x: &GpuStorage,
    planes: usize,
    h: usize,
    w: usize,
) -> Result<GpuStorage> {
    const OP: &str = "upsample_nearest2x_forward";
    check_i32(OP, "2 * width", 2 * w)?;
    check_i32(OP, "height", h)?;
    let total = planes * 4 * h * w;
    let y = alloc(dev, total)?;
    if total > 0 {
        let args = [y.arg(), x.arg(), u64_arg(planes), super::int(OP, "h", h)?, super::int(OP, "w", w)?];
        run(dev, &kernels::layout::UPSAMPLE_NEAREST2X_FWD_F32, grid_for(total as u64), &args)?;
    }
    Ok(y)
}

/// dx [planes, h, w] = sum of each 2x2 block of dy [planes, 2h, 2w].
pub fn upsample_nearest2x_backward(
    dev: &GpuDevice,
    dy: &GpuStorage,
    planes: usize,
    h: usize,
    w: usize,
) -> Result<GpuStorage> {
    const OP: &str = "upsample_nearest2x_backward";
    check_i32(OP, "2 * width", 2 * w)?;
    let total = planes * h * w;
    let dx = alloc(dev, total)?;
    if total > 0 {
        let args = [dx.arg(), dy.arg(), u64_arg(planes), super::int(OP, "h", h)?, super::int(OP, "w", w)?];
        run(dev, &kernels::layout::UPSAMPLE_NEAREST2X_BWD_F32, grid_for(total as u64), &args)?;
    }
    Ok(dx)
}

/// out [n, a_len + b_len] from a [n, a_len], b [n, b_len] (a_len = Ca*H*W,
/// b_len = Cb*H*W: NCHW channel concatenation).
pub fn concat_channels(
    dev: &GpuDevice,
    a: &GpuStorage,
    b: &GpuStorage,
    n: usize,
    a_len: usize,
    b_len: usize,
) -> Result<GpuStorage> {
    let total = n * (a_len + b_len);
    let out = alloc(dev, total)?;
    if total > 0 {
        let args = [out.arg(), a.arg(), b.arg(), u64_arg(n), u64_arg(a_len), u64_arg(b_len)];
        run(dev, &kernels::layout::CONCAT_CHANNELS_FWD_F32, grid_for(total as u64), &args)?;
    }
    Ok(out)
}

/// (a [n, a_len], b [n, b_len]) from d [n, a_len + b_len].
pub fn split_channels(
    dev: &GpuDevice,
    d: &GpuStorage,
    n: usize,
    a_len: usize,
    b_len: usize,
) -> Result<(GpuStorage, GpuStorage)> {
    let a = alloc(dev, n * a_len)?;
    let b = alloc(dev, n * b_len)?;
    let total = n * (a_len + b_len);
    if total > 0 {
        let args = [a.arg(), b.arg(), d.arg(), u64_arg(n), u64_arg(a_len), u64_arg(b_len)];
        run(dev, &kernels::layout::SPLIT_CHANNELS_FWD_F32, grid_for(total as u64), &args)?;
    }
    Ok((a, b))
}

/// y [planes, hw] = x + bias[plane]; bias has `planes` = N * C values.
pub fn add_channel_bias(
    dev: &GpuDevice,
    x: &GpuStorage,
    bias: &GpuStorage,
    planes: usize,
    hw: usize,
) -> Result<GpuStorage> {
    let total = planes * hw;
    let y = alloc(dev, total)?;
    if total > 0 {
        run(
            dev,
            &kernels::layout::ADD_CHANNEL_BIAS_FWD_F32,
            grid_for(total as u64),
            &[y.arg(), x.arg(), bias.arg(), u64_arg(planes), u64_arg(hw)],
        )?;
    }
    Ok(y)
}

/// dbias [planes] = sum of dy over each plane of `hw` elements (zeros when
/// hw is 0).
pub fn channel_bias_backward(dev: &GpuDevice, dy: &GpuStorage, planes: usize, hw: usize) -> Result<GpuStorage> {
    if hw == 0 {
        return dev.zeros_f32(planes);
    }
    let db = alloc(dev, planes)?;
    if planes > 0 {
        let per_block = (BLOCK / 32) as usize; // one warp per plane
        let grid = Dim3::x(planes.div_ceil(per_block).min(u32::MAX as usize) as u32);
        super::check_i32("channel_bias_backward", "planes / 8", planes.div_ceil(per_block))?;
        run(
            dev,
            &kernels::layout::ADD_CHANNEL_BIAS_BWD_F32,
            grid,
            &[db.arg(), dy.arg(), u64_arg(planes), u64_arg(hw)],
        )?;
    }
    Ok(db)
}
