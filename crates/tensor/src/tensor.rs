//! `Tensor`: a shape and contiguous storage on one device.

use crate::gpu::GpuStorage;
use crate::storage::{CpuStorage, Storage};
use crate::{philox, DType, Device, Element, Result, Shape, TensorError};

/// A contiguous, row-major tensor. Cloning a CPU tensor copies its data;
/// cloning a GPU tensor shares the buffer until one of them is written.
#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Shape,
    storage: Storage,
}

impl Tensor {
    pub(crate) fn from_cpu<T: Element>(shape: Shape, data: Vec<T>) -> Self {
        debug_assert_eq!(shape.numel(), data.len());
        Tensor { shape, storage: Storage::Cpu(T::wrap(data)) }
    }

    pub(crate) fn from_gpu(shape: Shape, s: GpuStorage) -> Self {
        debug_assert_eq!(shape.numel(), s.len());
        Tensor { shape, storage: Storage::Gpu(s) }
    }

    /// A CPU tensor over `data`; errors if the length does not match.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.numel() {
            return Err(TensorError::DataLength { len: data.len(), numel: shape.numel(), shape });
        }
        Ok(Tensor::from_cpu(shape, data))
    }

    /// A CPU tensor copied from a slice.
    pub fn from_slice<T: Element>(data: &[T], shape: impl Into<Shape>) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.numel();
        match device {
            Device::Cpu => Ok(Tensor { shape, storage: Storage::Cpu(CpuStorage::zeros(dtype, n)?) }),
            Device::Gpu(g) if dtype == DType::BF16 => {
                let s = g.alloc_bf16(n)?;
                g.driver().memset_zero(s.ptr(), n * 2)?; // +0.0 in bf16 is all zero bits too
                Ok(Tensor::from_gpu(shape, s))
            }
            Device::Gpu(g) => {
                check_gpu_dtype("zeros", dtype, g)?;
                Ok(Tensor::from_gpu(shape, g.zeros_f32(n)?))
            }
        }
    }

    pub fn full(shape: impl Into<Shape>, value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.numel();
        let t = match dtype {
            DType::F32 | DType::BF16 => Tensor::from_cpu(shape, vec![value as f32; n]),
            DType::F64 => Tensor::from_cpu(shape, vec![value; n]),
        };
        t.to_device(device)?.to_dtype(dtype)
    }

    /// Standard normal samples: element i is `philox::normal(seed, 0, stream, i)`,
    /// the same numbers on every device.
    pub fn randn(shape: impl Into<Shape>, seed: u64, stream: u32, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.numel();
        let mut v = vec![0f32; n];
        philox::fill_normal(&mut v, seed, 0, stream);
        let t = match dtype {
            DType::F32 | DType::BF16 => Tensor::from_cpu(shape, v),
            DType::F64 => Tensor::from_cpu(shape, v.into_iter().map(f64::from).collect()),
        };
        t.to_device(device)?.to_dtype(dtype)
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub(crate) fn storage_mut(&mut self) -> &mut Storage {
        &mut self.storage
    }

    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Gpu(g) => Device::Gpu(g.device().clone()),
        }
    }

    /// The same data under another shape with as many elements.
    pub fn reshape(self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(TensorError::invalid(
                "reshape",
                format!("cannot view {} ({} elements) as {}", self.shape, self.numel(), shape),
            ));
        }
        Ok(Tensor { shape, storage: self.storage })
    }

    /// The host slice of a CPU tensor of element type `T`.
    pub fn cpu_slice<T: Element>(&self) -> Result<&[T]> {
        match &self.storage {
            Storage::Cpu(s) => {
                T::slice(s).ok_or(TensorError::DTypeMismatch { op: "cpu_slice", a: s.dtype(), b: T::DTYPE })
            }
            Storage::Gpu(g) => Err(TensorError::Unsupported {
                op: "cpu_slice",
                device: g.device().name(),
                why: "copy the tensor to the CPU first (to_device / to_vec)".into(),
            }),
        }
    }

    pub(crate) fn cpu_slice_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        match &mut self.storage {
            Storage::Cpu(s) => {
                let dt = s.dtype();
                T::slice_mut(s).ok_or(TensorError::DTypeMismatch { op: "cpu_slice_mut", a: dt, b: T::DTYPE })
            }
            Storage::Gpu(g) => Err(TensorError::Unsupported {
                op: "cpu_slice_mut",
                device: g.device().name(),
                why: "not a host tensor".into(),
            }),
        }
    }

    /// The elements as f32, copied from wherever they live (bf16 widened,
    /// exactly).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(v.to_vec()),
            Storage::Cpu(CpuStorage::F64(v)) => Ok(v.iter().map(|&x| x as f32).collect()),
            Storage::Gpu(g) => g.download_f32(),
        }
    }

    /// The elements as f64, copied from wherever they live.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        match &self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(v.iter().map(|&x| x as f64).collect()),
            Storage::Cpu(CpuStorage::F64(v)) => Ok(v.to_vec()),
            Storage::Gpu(g) => Ok(g.download_f32()?.into_iter().map(f64::from).collect()),
        }
    }

    /// The single element of a one-element tensor.
    pub fn scalar_f64(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(TensorError::shape("scalar", "one element", &self.shape));
        }
        Ok(self.to_vec_f64()?[0])
    }

    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        match (&self.storage, device) {
            (Storage::Cpu(_), Device::Cpu) => Ok(self.clone()),
            (Storage::Gpu(g), Device::Gpu(d)) if g.device().same(d) => Ok(self.clone()),
            (Storage::Cpu(s), Device::Gpu(d)) => {
                check_gpu_dtype("to_device", s.dtype(), d)?;
                let v = self.to_vec_f32()?;
                Ok(Tensor::from_gpu(self.shape.clone(), d.upload_f32(&v)?))
            }
            // a bf16 tensor comes to the host as f32 (widened exactly: the
            // host has no bf16 storage)
            (Storage::Gpu(g), Device::Cpu) => Ok(Tensor::from_cpu(self.shape.clone(), g.download_f32()?)),
            (Storage::Gpu(g), Device::Gpu(d)) => {
                let v = self.to_vec_f32()?;
                Tensor::from_gpu(self.shape.clone(), d.upload_f32(&v)?).to_dtype(g.dtype())
            }
        }
    }

    /// A copy in another element type: f32 <-> f64 on the CPU, f32 <-> bf16
    /// on a GPU (to bf16 rounds to nearest even, as the tensor cores'
    /// input conversion does; to f32 is exact). See [`crate::ops::cast`].
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if self.dtype() == dtype {
            return Ok(self.clone());
        }
        match (&self.storage, dtype) {
            (Storage::Cpu(_), DType::F32) => Ok(Tensor::from_cpu(self.shape.clone(), self.to_vec_f32()?)),
            (Storage::Cpu(_), DType::F64) => Ok(Tensor::from_cpu(self.shape.clone(), self.to_vec_f64()?)),
            (Storage::Cpu(_), DType::BF16) => Err(TensorError::bf16_on_cpu()),
            (Storage::Gpu(_), _) => crate::ops::cast(self, dtype),
        }
    }
}

pub(crate) fn check_gpu_dtype(op: &'static str, dtype: DType, dev: &crate::gpu::GpuDevice) -> Result<()> {
    if dtype == DType::F32 {
        Ok(())
    } else {
        Err(TensorError::Unsupported {
            op,
            device: dev.name(),
            why: format!("GPU tensors are f32 (or bf16 through to_dtype), not {dtype:?}"),
        })
    }
}
