//! The one error type of the tensor crate: every shape, dtype and device
//! problem is reported here instead of panicking.

use crate::{DType, Shape};

#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    ShapeMismatch { op: &'static str, expected: String, got: Shape },

    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    #[error("{op}: dtype mismatch: {a:?} vs {b:?}")]
    DTypeMismatch { op: &'static str, a: DType, b: DType },

    #[error("{op}: tensors live on different devices ({a} and {b})")]
    DeviceMismatch { op: &'static str, a: String, b: String },

    #[error("{op} is not supported on {device}: {why}")]
    Unsupported { op: &'static str, device: String, why: String },

    #[error("data length {len} does not match shape {shape} ({numel} elements)")]
    DataLength { len: usize, shape: Shape, numel: usize },

    #[error("CUDA driver: {0}")]
    Cuda(String),

    #[error("NVRTC: {0}")]
    Nvrtc(String),

    #[error("out of GPU memory on {device}: {msg}")]
    OutOfMemory { device: String, msg: String },

    #[error("kernel launch {kernel}: {msg}")]
    Launch { kernel: String, msg: String },
}

pub type Result<T> = std::result::Result<T, TensorError>;

impl TensorError {
    pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        TensorError::InvalidArgument { op, msg: msg.into() }
    }

    /// A bf16 tensor reached host code: bf16 is GPU storage only.
    #[doc(hidden)]
    pub fn bf16_on_cpu() -> Self {
        TensorError::Unsupported {
            op: "bf16",
            device: "cpu".into(),
            why: "bf16 tensors live on GPUs only (the CPU reference rounds to bf16 through Precision::Bf16)".into(),
        }
    }

    pub(crate) fn shape(op: &'static str, expected: impl Into<String>, got: &Shape) -> Self {
        TensorError::ShapeMismatch { op, expected: expected.into(), got: got.clone() }
    }
}
