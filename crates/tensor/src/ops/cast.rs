//! Element type conversion: f32 <-> f64 on the CPU, f32 <-> bf16 on a GPU
//! (bf16 is GPU storage only; see `dtype.rs`).

use crate::gpu::launch;
use crate::{DType, Result, Storage, Tensor, TensorError};

/// `x` as `dtype` (a clone when it already is). To bf16 rounds to nearest
/// even, the tensor cores' input rounding; bf16 to f32 is exact.
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    let _timer = crate::profile::op("cast");
    if x.dtype() == dtype {
        return Ok(x.clone());
    }
    match (x.storage(), dtype) {
        (Storage::Cpu(_), _) => x.to_dtype(dtype),
        (Storage::Gpu(g), DType::BF16) if g.dtype() == DType::F32 => {
            Ok(Tensor::from_gpu(x.shape().clone(), launch::cast::round_to_bf16(g.device(), g)?))
        }
        (Storage::Gpu(g), DType::F32) if g.dtype() == DType::BF16 => {
            Ok(Tensor::from_gpu(x.shape().clone(), launch::cast::widen_to_f32(g.device(), g)?))
        }
        (Storage::Gpu(g), _) => Err(TensorError::Unsupported {
            op: "cast",
            device: g.device().name(),
            why: format!("GPU tensors are f32 or bf16, not {dtype:?}"),
        }),
    }
}
