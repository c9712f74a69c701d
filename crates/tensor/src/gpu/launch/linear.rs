//! Launch code of kernels/linear.cu: 64x64-tiled SGEMMs, 256 threads, and
//! a split bias reduction.

use super::reduce::{split_terms, sum_splits};
use super::{alloc, grid_dim_yz, int, run, run_shared, BLOCK};
use crate::geom::LinearDims;
use crate::gpu::kernels::{self, Kernel};
use crate::gpu::{Dim3, GpuDevice, GpuStorage, KernelArg};
use crate::Result;

/// Output tile of the GEMM kernels (LIN_BM = LIN_BN in linear.cu).
const TILE: usize = 64;

/// Fewest rows a split of the bias gradient sums.
const BIAS_MIN_ROWS: usize = 4;

/// The split of the bias gradient over the rows: (splits, rows per split),
/// from the shape alone.
pub fn bias_grad_splits(n: usize, d_out: usize) -> (usize, usize) {
    split_terms(d_out.div_ceil(BLOCK as usize), n, BIAS_MIN_ROWS)
}

pub(crate) fn gemm_grid(op: &'static str, m: usize, n: usize) -> Result<Dim3> {
    Ok(Dim3::new(n.div_ceil(TILE).max(1) as u32, grid_dim_yz(op, "rows / 64", m.div_ceil(TILE).max(1))?, 1))
}

/// The GEMM kernels of one arithmetic and the block they run in: linear.cu's
/// FP32 SIMT kernels here, the tensor-core ones in `linear_tc.rs`. Both
/// tile the output 64 x 64 and take the same arguments.
pub(crate) struct GemmKernels {
    pub forward: &'static Kernel,
    pub backward_data: &'static Kernel,
    pub backward_weight: &'static Kernel,
    pub threads: u32,
}

const FP32: GemmKernels = GemmKernels {
    forward: &kernels::linear::LINEAR_FWD_F32,
    backward_data: &kernels::linear::LINEAR_BWD_DATA_F32,
    backward_weight: &kernels::linear::LINEAR_BWD_WEIGHT_F32,
    threads: BLOCK,
};

/// y [n, d_out] = x [n, d_in] w^T + b, w [d_out, d_in], b [d_out].
pub fn linear_forward(
    dev: &GpuDevice,
    x: &GpuStorage,
    w: &GpuStorage,
    b: Option<&GpuStorage>,
    d: LinearDims,
) -> Result<GpuStorage> {
    linear_forward_on(dev, x, w, b, d, &FP32)
}

/// [`linear_forward`] with the given kernels.
pub(crate) fn linear_forward_on(
    dev: &GpuDevice,
    x: &GpuStorage,
    w: &GpuStorage,
    b: Option<&GpuStorage>,
    d: LinearDims,
    k: &GemmKernels,
) -> Result<GpuStorage> {
    const OP: &str = "linear_forward";
    let y = alloc(dev, d.n * d.d_out)?;
    if d.n == 0 || d.d_out == 0 {
        return Ok(y);
    }
    let (bias, has) = match b {
        Some(b) => (b.arg(), 1),
        None => (KernelArg::Ptr(0), 0),
    };
    let args = [
        y.arg(),
        x.arg(),
        w.arg(),
        bias,
        KernelArg::I32(has),
        int(OP, "N", d.n)?,
        int(OP, "In", d.d_in)?,
        int(OP, "Out", d.d_out)?,
    ];
    run_shared(dev, k.forward, gemm_grid(OP, d.n, d.d_out)?, Dim3::x(k.threads), 0, &args)?;
    Ok(y)
}

/// (dx [n, d_in] = dy w, dw [d_out, d_in] = dy^T x, db [d_out] = column sums of dy).
pub fn linear_backward(
    dev: &GpuDevice,
    dy: &GpuStorage,
    x: &GpuStorage,
    w: &GpuStorage,
    d: LinearDims,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    linear_backward_on(dev, dy, x, w, d, &FP32)
}

/// [`linear_backward`] with the given GEMM kernels (the bias gradient, no
/// GEMM, is the same split column sum in every arithmetic).
pub(crate) fn linear_backward_on(
    dev: &GpuDevice,
    dy: &GpuStorage,
    x: &GpuStorage,
    w: &GpuStorage,
    d: LinearDims,
    k: &GemmKernels,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    const OP: &str = "linear_backward";
    let dx = alloc(dev, d.n * d.d_in)?;
    let dw = alloc(dev, d.d_out * d.d_in)?;
    let (n, di, dout) = (int(OP, "N", d.n)?, int(OP, "In", d.d_in)?, int(OP, "Out", d.d_out)?);
    let block = Dim3::x(k.threads);
    if d.n > 0 && d.d_in > 0 {
        let args = [dx.arg(), dy.arg(), w.arg(), n, di, dout];
        run_shared(dev, k.backward_data, gemm_grid(OP, d.n, d.d_in)?, block, 0, &args)?;
    }
    if d.d_out > 0 && d.d_in > 0 {
        // with no rows, dw is the empty sum: the kernel writes its zeros
        let args = [dw.arg(), dy.arg(), x.arg(), n, di, dout];
        run_shared(dev, k.backward_weight, gemm_grid(OP, d.d_out, d.d_in)?, block, 0, &args)?;
    }
    let db = bias_grad(dev, dy, d)?;
    Ok((dx, dw, db))
}

/// db [d_out] = column sums of dy [n, d_out]: split partial sums in row
/// order, then `sum_splits` (shared by the tensor-core backward).
pub(crate) fn bias_grad(dev: &GpuDevice, dy: &GpuStorage, d: LinearDims) -> Result<GpuStorage> {
    const OP: &str = "linear_backward";
    if d.n == 0 {
        return dev.zeros_f32(d.d_out);
    }
    if d.d_out == 0 {
        return alloc(dev, 0);
    }
    let (n, dout) = (int(OP, "N", d.n)?, int(OP, "Out", d.d_out)?);
    let (splits, rows) = bias_grad_splits(d.n, d.d_out);
    let part = alloc(dev, splits * d.d_out)?;
    let grid = Dim3::new(d.d_out.div_ceil(BLOCK as usize) as u32, grid_dim_yz(OP, "bias splits", splits)?, 1);
    run(dev, &kernels::linear::LINEAR_BWD_BIAS_F32, grid, &[part.arg(), dy.arg(), n, dout, int(OP, "rows", rows)?])?;
    if splits == 1 {
        return Ok(part);
    }
    sum_splits(dev, OP, &part, splits, d.d_out)
}
