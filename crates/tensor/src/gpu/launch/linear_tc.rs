//! Launch code of the tensor-core linear layer (kernels/linear_fwd_tc.cu,
//! linear_bwd_tc.cu, on tc_gemm.cuh's strided GEMM): 64 x 64 output tiles,
//! 128 threads, static shared memory; the bias gradient is linear.cu's
//! split column sum. `Precision::Fp32` runs `linear.rs` (today's path).

use super::conv2d_tc::THREADS;
use super::linear::{self, bias_grad, gemm_grid};
use super::{alloc, int, run_shared};
use crate::geom::LinearDims;
use crate::gpu::kernels::{self, Kernel};
use crate::gpu::{Dim3, GpuDevice, GpuStorage, KernelArg};
use crate::{Precision, Result};

fn pick(p: Precision, bf16: &'static Kernel, tf32: &'static Kernel) -> &'static Kernel {
    if p == Precision::Bf16 {
        bf16
    } else {
        tf32
    }
}

/// y [n, d_out] = x w^T + b with the GEMM inputs rounded to `p`.
pub fn linear_forward(
    dev: &GpuDevice,
    x: &GpuStorage,
    w: &GpuStorage,
    b: Option<&GpuStorage>,
    d: LinearDims,
    p: Precision,
) -> Result<GpuStorage> {
    const OP: &str = "linear_forward";
    if p == Precision::Fp32 {
        return linear::linear_forward(dev, x, w, b, d);
    }
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
    use kernels::linear_fwd_tc::{LINEAR_FWD_TC_BF16_F32, LINEAR_FWD_TC_TF32_F32};
    let kernel = pick(p, &LINEAR_FWD_TC_BF16_F32, &LINEAR_FWD_TC_TF32_F32);
    run_shared(dev, kernel, gemm_grid(OP, d.n, d.d_out)?, Dim3::x(THREADS), 0, &args)?;
    Ok(y)
}

/// (dx = dy w, dw = dy^T x, db = column sums of dy), GEMM inputs rounded to `p`.
pub fn linear_backward(
    dev: &GpuDevice,
    dy: &GpuStorage,
    x: &GpuStorage,
    w: &GpuStorage,
    d: LinearDims,
    p: Precision,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    const OP: &str = "linear_backward";
    if p == Precision::Fp32 {
        return linear::linear_backward(dev, dy, x, w, d);
    }
    let dx = alloc(dev, d.n * d.d_in)?;
    let dw = alloc(dev, d.d_out * d.d_in)?;
    let (n, di, dout) = (int(OP, "N", d.n)?, int(OP, "In", d.d_in)?, int(OP, "Out", d.d_out)?);
    use kernels::linear_bwd_tc::*;
    if d.n > 0 && d.d_in > 0 {
        let kernel = pick(p, &LINEAR_BWD_DATA_TC_BF16_F32, &LINEAR_BWD_DATA_TC_TF32_F32);
        let args = [dx.arg(), dy.arg(), w.arg(), n, di, dout];
        run_shared(dev, kernel, gemm_grid(OP, d.n, d.d_in)?, Dim3::x(THREADS), 0, &args)?;
    }
    if d.d_out > 0 && d.d_in > 0 {
        // with no rows, dw is the empty sum: the kernel writes its zeros
        let kernel = pick(p, &LINEAR_BWD_WEIGHT_TC_BF16_F32, &LINEAR_BWD_WEIGHT_TC_TF32_F32);
        let args = [dw.arg(), dy.arg(), x.arg(), n, di, dout];
        run_shared(dev, kernel, gemm_grid(OP, d.d_out, d.d_in)?, Dim3::x(THREADS), 0, &args)?;
    }
    let db = bias_grad(dev, dy, d)?;
    Ok((dx, dw, db))
}
