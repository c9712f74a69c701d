//! Launch code of the tensor-core linear layer (kernels/linear_fwd_tc.cu,
//! linear_bwd_tc.cu, on tc_gemm.cuh's strided GEMM): 64 x 64 output tiles,
//! 128 threads, static shared memory; the bias gradient is linear.cu's
//! split column sum. `Precision::Fp32` runs `linear.rs` (today's path).

use super::conv2d_tc::THREADS;
use super::linear::{self, GemmKernels};
use crate::geom::LinearDims;
use crate::gpu::kernels;
use crate::gpu::{GpuDevice, GpuStorage};
use crate::{Precision, Result};

/// The tensor-core kernels of `p` (bf16 or tf32).
fn tc_kernels(p: Precision) -> GemmKernels {
    use kernels::linear_bwd_tc::*;
    use kernels::linear_fwd_tc::{LINEAR_FWD_TC_BF16_F32, LINEAR_FWD_TC_TF32_F32};
    if p == Precision::Bf16 {
        GemmKernels {
            forward: &LINEAR_FWD_TC_BF16_F32,
            backward_data: &LINEAR_BWD_DATA_TC_BF16_F32,
            backward_weight: &LINEAR_BWD_WEIGHT_TC_BF16_F32,
            threads: THREADS,
        }
    } else {
        GemmKernels {
            forward: &LINEAR_FWD_TC_TF32_F32,
            backward_data: &LINEAR_BWD_DATA_TC_TF32_F32,
            backward_weight: &LINEAR_BWD_WEIGHT_TC_TF32_F32,
            threads: THREADS,
        }
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
    if p == Precision::Fp32 {
        return linear::linear_forward(dev, x, w, b, d);
    }
    linear::linear_forward_on(dev, x, w, b, d, &tc_kernels(p))
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
    if p == Precision::Fp32 {
        return linear::linear_backward(dev, dy, x, w, d);
    }
    linear::linear_backward_on(dev, dy, x, w, d, &tc_kernels(p))
}
