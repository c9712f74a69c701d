//! The sinusoidal timestep embedding that conditions the U-Net on t.
//! No backward: timesteps are data, not parameters.

use crate::cpu::embedding as kernels;
use crate::gpu::launch;
use crate::{with_element, Result, Storage, Tensor, TensorError};

/// t [N] (timesteps as floats) -> [N, dim]: row n is
/// [sin(t_n f_0), .., sin(t_n f_{h-1}), cos(t_n f_0), .., cos(t_n f_{h-1})] (+ a zero if dim is odd)
/// with h = dim/2 and f_k = exp(-k ln(10000) / (h - 1)); for dim 2 or 3, f_0 = 1.
pub fn timestep_embedding(t: &Tensor, dim: usize) -> Result<Tensor> {
    const OP: &str = "timestep_embedding";
    if t.shape().rank() != 1 {
        return Err(TensorError::shape(OP, "a rank-1 [N] tensor of timesteps", t.shape()));
    }
    if dim < 2 {
        return Err(TensorError::invalid(
            OP,
            format!("embedding dim must be at least 2 (one sine, one cosine), got {dim}"),
        ));
    }
    let n = t.numel();
    match t.storage() {
        Storage::Cpu(s) => with_element!(s.dtype(), T, {
            let mut emb = vec![T::default(); n * dim];
            kernels::timestep_embedding(t.cpu_slice::<T>()?, dim, &mut emb);
            Ok(Tensor::from_cpu([n, dim].into(), emb))
        }),
        Storage::Gpu(g) => {
            Ok(Tensor::from_gpu([n, dim].into(), launch::embedding::timestep_embedding(g.device(), g, n, dim)?))
        }
    }
}
