//! Launch code of kernels/embedding.cu.

use super::{alloc, int, run, BLOCK};
use crate::gpu::kernels;
use crate::gpu::{Dim3, GpuDevice, GpuStorage, KernelArg};
use crate::Result;

/// emb [n, dim] from the timesteps t [n] (as floats); `dim >= 2` is checked
/// by the caller.
pub fn timestep_embedding(dev: &GpuDevice, t: &GpuStorage, n: usize, dim: usize) -> Result<GpuStorage> {
    const OP: &str = "timestep_embedding";
    let total = n * dim;
    let emb = alloc(dev, total)?;
    if total > 0 {
        super::check_i32(OP, "n * dim", total)?;
        let grid = Dim3::x(total.div_ceil(BLOCK as usize) as u32);
        run(
            dev,
            &kernels::embedding::TIMESTEP_EMBEDDING_FWD_F32,
            grid,
            &[emb.arg(), t.arg(), int(OP, "n", n)?, int(OP, "dim", dim)?],
        )?;
    }
    Ok(emb)
}

/// out [n, dim] = table [rows, dim] gathered by `labels` (floats, checked
/// `< rows` by the caller).
pub fn class_embedding(dev: &GpuDevice, table: &GpuStorage, labels: u64, n: usize, dim: usize) -> Result<GpuStorage> {
    const OP: &str = "class_embedding";
    let total = n * dim;
    let out = alloc(dev, total)?;
    if total > 0 {
        super::check_i32(OP, "n * dim", total)?;
        let grid = Dim3::x(total.div_ceil(BLOCK as usize) as u32);
        run(
            dev,
            &kernels::embedding::CLASS_EMBEDDING_FWD_F32,
            grid,
            &[out.arg(), table.arg(), KernelArg::Ptr(labels), int(OP, "n", n)?, int(OP, "dim", dim)?],
        )?;
    }
    Ok(out)
}

/// dtable [rows, dim] from dout [n, dim] and the same labels.
pub fn class_embedding_backward(
    dev: &GpuDevice,
    dout: &GpuStorage,
    labels: u64,
    n: usize,
    dim: usize,
    rows: usize,
) -> Result<GpuStorage> {
    const OP: &str = "class_embedding_backward";
    let total = rows * dim;
    let dtable = alloc(dev, total)?;
    if total > 0 {
        super::check_i32(OP, "rows * dim", total)?;
        super::check_i32(OP, "n * dim", n * dim)?;
        let grid = Dim3::x(total.div_ceil(BLOCK as usize) as u32);
        run(
            dev,
            &kernels::embedding::CLASS_EMBEDDING_BWD_F32,
            grid,
            &[
                dtable.arg(),
                dout.arg(),
                KernelArg::Ptr(labels),
                int(OP, "n", n)?,
                int(OP, "dim", dim)?,
                int(OP, "rows", rows)?,
            ],
        )?;
    }
    Ok(dtable)
}
