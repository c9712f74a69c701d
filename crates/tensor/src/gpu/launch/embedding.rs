//! Launch code of kernels/embedding.cu.

use super::{alloc, int, run, BLOCK};
use crate::gpu::kernels;
use crate::gpu::{Dim3, GpuDevice, GpuStorage};
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
