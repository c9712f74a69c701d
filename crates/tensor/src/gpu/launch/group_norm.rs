//! Launch code of kernels/group_norm.cu: one block per (image, group) slab;
//! dgamma, dbeta as a split reduction over the images.

use super::reduce::{split_terms, sum_splits};
use super::{alloc, grid_dim_yz, int, run, BLOCK};
use crate::geom::GroupNormDims;
use crate::gpu::kernels;
use crate::gpu::{Dim3, GpuDevice, GpuStorage, KernelArg};
use crate::{Result, TensorError};

const OP_F: &str = "group_norm_forward";
const OP_B: &str = "group_norm_backward";

/// Fewest images a split of dgamma, dbeta sums.
const PARAMS_MIN_IMAGES: usize = 4;

/// The split of dgamma, dbeta over the images: (splits, images per split),
/// from the shape alone.
pub fn params_grad_splits(n: usize, c: usize) -> (usize, usize) {
    split_terms(c.div_ceil(BLOCK as usize), n, PARAMS_MIN_IMAGES)
}

fn slabs_grid(op: &'static str, d: &GroupNormDims) -> Result<Dim3> {
    let slabs = d.slabs();
    super::check_i32(op, "channels per group * H * W", d.slab())?;
    u32::try_from(slabs).map(Dim3::x).map_err(|_| TensorError::invalid(op, format!("{slabs} (image, group) slabs")))
}

/// (y, mean [N*G], rstd [N*G]) of x [N, C, HW] with gamma, beta [C];
/// `d.groups` divides `d.c` (checked by the caller). eps is rounded to f32.
pub fn group_norm_forward(
    dev: &GpuDevice,
    x: &GpuStorage,
    gamma: &GpuStorage,
    beta: &GpuStorage,
    d: GroupNormDims,
    eps: f64,
    fuse_silu: bool,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    let y = alloc(dev, d.n * d.c * d.hw)?;
    let mean = alloc(dev, d.slabs())?;
    let rstd = alloc(dev, d.slabs())?;
    if d.slabs() == 0 {
        return Ok((y, mean, rstd));
    }
    if d.slab() == 0 {
        // empty groups: nothing to normalise; stats as the CPU leaves them
        dev.driver().memset_zero(mean.ptr(), d.slabs() * 4)?;
        dev.driver().memset_zero(rstd.ptr(), d.slabs() * 4)?;
        return Ok((y, mean, rstd));
    }
    let args = [
        y.arg(),
        mean.arg(),
        rstd.arg(),
        x.arg(),
        gamma.arg(),
        beta.arg(),
        int(OP_F, "C", d.c)?,
        int(OP_F, "H*W", d.hw)?,
        int(OP_F, "groups", d.groups)?,
        KernelArg::F32(eps as f32),
        KernelArg::I32(fuse_silu as i32),
    ];
    run(dev, &kernels::group_norm::GROUP_NORM_FWD_F32, slabs_grid(OP_F, &d)?, &args)?;
    Ok((y, mean, rstd))
}

/// (dx, dgamma [C], dbeta [C]) from dy, the forward's inputs and its saved
/// mean and rstd. Workspaces: two [N*C] buffers of per-image partials and,
/// with more than one split, two [S*C] buffers of per-split sums.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    dev: &GpuDevice,
    dy: &GpuStorage,
    x: &GpuStorage,
    gamma: &GpuStorage,
    beta: &GpuStorage,
    mean: &GpuStorage,
    rstd: &GpuStorage,
    d: GroupNormDims,
    fuse_silu: bool,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    let dx = alloc(dev, d.n * d.c * d.hw)?;
    if d.slabs() == 0 || d.slab() == 0 {
        return Ok((dx, dev.zeros_f32(d.c)?, dev.zeros_f32(d.c)?));
    }
    let pg = alloc(dev, d.n * d.c)?;
    let pb = alloc(dev, d.n * d.c)?;
    let (c, hw, g) = (int(OP_B, "C", d.c)?, int(OP_B, "H*W", d.hw)?, int(OP_B, "groups", d.groups)?);
    let args = [
        dx.arg(),
        pg.arg(),
        pb.arg(),
        dy.arg(),
        x.arg(),
        gamma.arg(),
        beta.arg(),
        mean.arg(),
        rstd.arg(),
        c,
        hw,
        g,
        KernelArg::I32(fuse_silu as i32),
    ];
    run(dev, &kernels::group_norm::GROUP_NORM_BWD_F32, slabs_grid(OP_B, &d)?, &args)?;
    let (splits, imgs) = params_grad_splits(d.n, d.c);
    let (qg, qb) = (alloc(dev, splits * d.c)?, alloc(dev, splits * d.c)?);
    let grid = Dim3::new(d.c.div_ceil(BLOCK as usize) as u32, grid_dim_yz(OP_B, "parameter splits", splits)?, 1);
    let n = int(OP_B, "N", d.n)?;
    let args = [qg.arg(), qb.arg(), pg.arg(), pb.arg(), n, c, int(OP_B, "images per split", imgs)?];
    run(dev, &kernels::group_norm::GROUP_NORM_BWD_PARAMS_F32, grid, &args)?;
    if splits == 1 {
        return Ok((dx, qg, qb));
    }
    let dgamma = sum_splits(dev, OP_B, &qg, splits, d.c)?;
    let dbeta = sum_splits(dev, OP_B, &qb, splits, d.c)?;
    Ok((dx, dgamma, dbeta))
}
