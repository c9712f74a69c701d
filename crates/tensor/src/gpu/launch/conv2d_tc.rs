//! Launch code of the tensor-core convolutions (kernels/conv2d_fwd_tc.cu,
//! conv2d_bwd_data_tc.cu, conv2d_bwd_weight_tc.cu, on the wmma tile of
//! tc_gemm.cuh): 64 x 64 output tiles, 128 threads (4 warps), static shared
//! memory; the weight gradient split-K as in `conv2d.rs` (same tile and K
//! step, so the same splits), its partials added by `sum_splits`.
//!
//! `Precision::Fp32` runs the SIMT kernels of `conv2d.rs` (today's path).
//! An input `x` stored in bf16 (forward and weight gradient) runs the
//! `_bf16in` kernels, at `Precision::Bf16` only: its values are already what
//! the bf16 tensor cores would round an f32 `x` to, so the bits out are the
//! same.

use super::conv2d::{self, ConvPass, Prepared};
use super::grid_dim_yz;
use crate::geom::ConvGeom;
use crate::gpu::kernels::{self, Kernel};
use crate::gpu::{Dim3, GpuDevice, GpuStorage};
use crate::{Precision, Result, TensorError};

/// Output tile (GEMM rows x columns) and block size of tc_gemm.cuh.
const TILE: usize = 64;
pub const THREADS: u32 = 128;

fn grid(op: &'static str, cols: usize, rows: usize) -> Result<Dim3> {
    let x = u32::try_from(cols.div_ceil(TILE).max(1))
        .map_err(|_| TensorError::invalid(op, format!("{cols} GEMM columns")))?;
    Ok(Dim3::new(x, grid_dim_yz(op, "channel tiles", rows.div_ceil(TILE).max(1))?, 1))
}

fn pick(p: Precision, bf16: &'static Kernel, tf32: &'static Kernel) -> &'static Kernel {
    if p == Precision::Bf16 {
        bf16
    } else {
        tf32
    }
}

/// Runs a prepared pass on the tensor-core tile: 64 x 64 outputs a block.
fn run_tc(op: &'static str, dev: &GpuDevice, pass: Prepared, kernel: &'static Kernel) -> Result<GpuStorage> {
    pass.launch(op, dev, kernel, Dim3::x(THREADS), |cols, rows| grid(op, cols, rows))
}

/// y [n, co, ho, wo] = conv(x, w) + b with the GEMM inputs rounded to `p`.
pub fn conv2d_forward(
    dev: &GpuDevice,
    x: &GpuStorage,
    w: &GpuStorage,
    b: Option<&GpuStorage>,
    g: &ConvGeom,
    p: Precision,
) -> Result<GpuStorage> {
    const OP: &str = "conv2d_forward";
    let bf16_x = super::bf16_input(OP, "x", x, p)?;
    if p == Precision::Fp32 {
        return conv2d::conv2d_forward(dev, x, w, b, g);
    }
    use kernels::conv2d_fwd_tc::{CONV2D_FWD_TC_BF16IN_F32, CONV2D_FWD_TC_BF16_F32, CONV2D_FWD_TC_TF32_F32};
    let kernel =
        if bf16_x { &CONV2D_FWD_TC_BF16IN_F32 } else { pick(p, &CONV2D_FWD_TC_BF16_F32, &CONV2D_FWD_TC_TF32_F32) };
    run_tc(OP, dev, ConvPass::forward(OP, dev, x, w, b, g)?, kernel)
}

/// dx [n, ci, h, w] from dy [n, co, ho, wo] and w, GEMM inputs rounded to `p`.
pub fn conv2d_backward_data(
    dev: &GpuDevice,
    dy: &GpuStorage,
    w: &GpuStorage,
    g: &ConvGeom,
    p: Precision,
) -> Result<GpuStorage> {
    const OP: &str = "conv2d_backward_data";
    if p == Precision::Fp32 {
        return conv2d::conv2d_backward_data(dev, dy, w, g);
    }
    use kernels::conv2d_bwd_data_tc::{CONV2D_BWD_DATA_TC_BF16_F32, CONV2D_BWD_DATA_TC_TF32_F32};
    let kernel = pick(p, &CONV2D_BWD_DATA_TC_BF16_F32, &CONV2D_BWD_DATA_TC_TF32_F32);
    run_tc(OP, dev, ConvPass::backward_data(OP, dev, dy, w, g)?, kernel)
}

/// dw [co, ci, kh, kw] from dy and x, GEMM inputs rounded to `p`; split-K
/// partials (`weight_grad_splits`) added in split order.
pub fn conv2d_backward_weight(
    dev: &GpuDevice,
    dy: &GpuStorage,
    x: &GpuStorage,
    g: &ConvGeom,
    p: Precision,
) -> Result<GpuStorage> {
    const OP: &str = "conv2d_backward_weight";
    let bf16_x = super::bf16_input(OP, "x", x, p)?;
    if p == Precision::Fp32 {
        return conv2d::conv2d_backward_weight(dev, dy, x, g);
    }
    use kernels::conv2d_bwd_weight_tc::{
        CONV2D_BWD_WEIGHT_TC_BF16IN_F32, CONV2D_BWD_WEIGHT_TC_BF16_F32, CONV2D_BWD_WEIGHT_TC_TF32_F32,
    };
    let kernel = if bf16_x {
        &CONV2D_BWD_WEIGHT_TC_BF16IN_F32
    } else {
        pick(p, &CONV2D_BWD_WEIGHT_TC_BF16_F32, &CONV2D_BWD_WEIGHT_TC_TF32_F32)
    };
    run_tc(OP, dev, ConvPass::backward_weight(OP, dev, dy, x, g)?, kernel)
}
