//! Launch code of kernels/conv2d.cu: implicit-GEMM convolution passes with
//! 64x64 output tiles and 256 threads, split-K for the weight gradient.
//!
//! The geometry is `geom::ConvGeom`, built and checked by `ops::conv2d`
//! (input [n, ci, h, w], weight [co, ci, kh, kw], output [n, co, ho, wo],
//! stride, pad_top, pad_left).

use super::{alloc, grid_dim_yz, int, run, BLOCK, MAX_GRID};
use crate::geom::ConvGeom;
use crate::gpu::kernels;
use crate::gpu::{Dim3, GpuDevice, GpuStorage, KernelArg};
use crate::{Result, TensorError};

/// Output tile (CV_BM = CV_BN) and K step (CV_BK) of conv2d.cu.
const TILE: usize = 64;
const KSTEP: usize = 16;

/// Blocks the weight-gradient split-K aims for (about two waves on a
/// 132-SM H100). A constant, never the device's SM count, so the split, and
/// with it the summation order, is the same on every device and the emulator.
pub const WEIGHT_GRAD_TARGET_BLOCKS: usize = 256;

fn geometry_args(op: &'static str, g: &ConvGeom) -> Result<[KernelArg; 12]> {
    // every per-image size and flattened GEMM dimension the kernels index with int
    for (what, v) in [
        ("Ci*KH*KW", g.ci * g.kh * g.kw),
        ("Co*KH*KW", g.co * g.kh * g.kw),
        ("H*W", g.h * g.w),
        ("Ho*Wo", g.ho * g.wo),
        ("Ci*H*W", g.ci * g.h * g.w),
        ("Co*Ho*Wo", g.co * g.ho * g.wo),
        ("padded input", (g.h + g.pad_top + g.kh) * g.stride.max(1)),
        ("padded width", (g.w + g.pad_left + g.kw) * g.stride.max(1)),
    ] {
        super::check_i32(op, what, v)?;
    }
    Ok([
        int(op, "N", g.n)?,
        int(op, "Ci", g.ci)?,
        int(op, "H", g.h)?,
        int(op, "W", g.w)?,
        int(op, "Co", g.co)?,
        int(op, "KH", g.kh)?,
        int(op, "KW", g.kw)?,
        int(op, "stride", g.stride)?,
        int(op, "pad_top", g.pad_top)?,
        int(op, "pad_left", g.pad_left)?,
        int(op, "Ho", g.ho)?,
        int(op, "Wo", g.wo)?,
    ])
}

fn tiles(op: &'static str, cols: usize, rows: usize) -> Result<Dim3> {
    let x = cols.div_ceil(TILE).max(1);
    let x = u32::try_from(x).map_err(|_| TensorError::invalid(op, format!("{cols} GEMM columns")))?;
    Ok(Dim3::new(x, grid_dim_yz(op, "channels / 64", rows.div_ceil(TILE).max(1))?, 1))
}

/// y [n, co, ho, wo] = conv(x, w) + b.
pub fn conv2d_forward(
    dev: &GpuDevice,
    x: &GpuStorage,
    w: &GpuStorage,
    b: Option<&GpuStorage>,
    g: &ConvGeom,
) -> Result<GpuStorage> {
    const OP: &str = "conv2d_forward";
    let geo = geometry_args(OP, g)?;
    let y = alloc(dev, g.n * g.co * g.ho * g.wo)?;
    if g.n * g.co * g.ho * g.wo == 0 {
        return Ok(y);
    }
    let (bias, has) = match b {
        Some(b) => (b.arg(), 1),
        None => (KernelArg::Ptr(0), 0),
    };
    let mut args = vec![y.arg(), x.arg(), w.arg(), bias, KernelArg::I32(has)];
    args.extend_from_slice(&geo);
    run(dev, &kernels::conv2d::CONV2D_FWD_F32, tiles(OP, g.n * g.ho * g.wo, g.co)?, &args)?;
    Ok(y)
}

/// dx [n, ci, h, w] from dy [n, co, ho, wo] and w.
pub fn conv2d_backward_data(dev: &GpuDevice, dy: &GpuStorage, w: &GpuStorage, g: &ConvGeom) -> Result<GpuStorage> {
    const OP: &str = "conv2d_backward_data";
    let geo = geometry_args(OP, g)?;
    let dx = alloc(dev, g.n * g.ci * g.h * g.w)?;
    if g.n * g.ci * g.h * g.w == 0 {
        return Ok(dx);
    }
    let mut args = vec![dx.arg(), dy.arg(), w.arg()];
    args.extend_from_slice(&geo);
    run(dev, &kernels::conv2d::CONV2D_BWD_DATA_F32, tiles(OP, g.n * g.h * g.w, g.ci)?, &args)?;
    Ok(dx)
}

/// The split-K of the weight gradient: (splits, GEMM-K elements per split).
/// A function of the shape alone.
pub fn weight_grad_splits(g: &ConvGeom) -> (usize, usize) {
    let k = g.n * g.ho * g.wo;
    let tiles = (g.co.div_ceil(TILE) * (g.ci * g.kh * g.kw).div_ceil(TILE)).max(1);
    let steps = k.div_ceil(KSTEP).max(1);
    let want = WEIGHT_GRAD_TARGET_BLOCKS.div_ceil(tiles).clamp(1, steps.min(65535));
    let per_split = steps.div_ceil(want) * KSTEP;
    (k.div_ceil(per_split).max(1), per_split)
}

/// dw [co, ci, kh, kw] from dy [n, co, ho, wo] and x. Split-K: each split
/// writes a partial gradient into a workspace of splits * |w| floats, then
/// one kernel sums the splits in order (skipped with a single split).
pub fn conv2d_backward_weight(dev: &GpuDevice, dy: &GpuStorage, x: &GpuStorage, g: &ConvGeom) -> Result<GpuStorage> {
    const OP: &str = "conv2d_backward_weight";
    let geo = geometry_args(OP, g)?;
    let count = g.co * g.ci * g.kh * g.kw;
    let dw = alloc(dev, count)?;
    if count == 0 {
        return Ok(dw);
    }
    let (splits, per_split) = weight_grad_splits(g);
    super::check_i32(OP, "N*Ho*Wo per split", per_split)?;
    let ws = if splits > 1 { alloc(dev, splits * count)? } else { dw.clone() };
    let mut args = vec![ws.arg(), dy.arg(), x.arg()];
    args.extend_from_slice(&geo);
    args.push(KernelArg::I32(per_split as i32));
    let mut grid = tiles(OP, g.ci * g.kh * g.kw, g.co)?;
    grid.z = grid_dim_yz(OP, "splits", splits)?;
    run(dev, &kernels::conv2d::CONV2D_BWD_WEIGHT_F32, grid, &args)?;
    if splits > 1 {
        let blocks = (count as u64).div_ceil(BLOCK as u64).clamp(1, MAX_GRID) as u32;
        let args = [dw.arg(), ws.arg(), KernelArg::I32(splits as i32), KernelArg::U64(count as u64)];
        run(dev, &kernels::conv2d::CONV2D_BWD_WEIGHT_REDUCE_F32, Dim3::x(blocks), &args)?;
    }
    Ok(dw)
}

/// db [co] = sum of dy [n, co, ho, wo] over images and pixels.
pub fn conv2d_backward_bias(dev: &GpuDevice, dy: &GpuStorage, n: usize, co: usize, howo: usize) -> Result<GpuStorage> {
    const OP: &str = "conv2d_backward_bias";
    if co == 0 {
        return alloc(dev, 0);
    }
    if n * howo == 0 {
        return dev.zeros_f32(co);
    }
    let db = alloc(dev, co)?;
    let grid = Dim3::x(u32::try_from(co).map_err(|_| TensorError::invalid(OP, "too many channels"))?);
    run(
        dev,
        &kernels::conv2d::CONV2D_BWD_BIAS_F32,
        grid,
        &[db.arg(), dy.arg(), int(OP, "N", n)?, int(OP, "Co", co)?, int(OP, "Ho*Wo", howo)?],
    )?;
    Ok(db)
}
