//! Where a tensor's elements live: host memory (f32 or f64) or a GPU buffer
//! (f32, or bf16 for activations only tensor cores read), as candle splits
//! its CPU and CUDA storage.

use crate::gpu::GpuStorage;
use crate::DType;
use std::sync::Arc;

/// Host elements behind an `Arc`: cloning a tensor shares its buffer (a
/// layer's cache holds its input without a copy) and the first write
/// through a shared buffer copies it (`Element::slice_mut`), as GPU storage
/// does.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Arc<Vec<f32>>),
    F64(Arc<Vec<f64>>),
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn zeros(dtype: DType, n: usize) -> crate::Result<Self> {
        match dtype {
            DType::F32 => Ok(CpuStorage::F32(Arc::new(vec![0.0; n]))),
            DType::F64 => Ok(CpuStorage::F64(Arc::new(vec![0.0; n]))),
            DType::BF16 => Err(crate::TensorError::bf16_on_cpu()),
        }
    }
}

impl Drop for CpuStorage {
    /// The last owner of a buffer hands it to `cpu::recycle` for the next
    /// output of its length.
    fn drop(&mut self) {
        match self {
            CpuStorage::F32(v) => {
                if let Some(v) = Arc::get_mut(v) {
                    crate::cpu::recycle::recycle(std::mem::take(v));
                }
            }
            CpuStorage::F64(v) => {
                if let Some(v) = Arc::get_mut(v) {
                    crate::cpu::recycle::recycle(std::mem::take(v));
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Gpu(GpuStorage),
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Gpu(g) => g.dtype(),
        }
    }
}
