//! The tensor crate of diffuse: `Tensor`, `Shape`, `Device`, Philox, and every
//! op with an explicit forward and backward.
//!
//! Layout (one op family per file in each place):
//! - `ops/`  the public op functions: shape checks, then dispatch on device;
//! - `cpu/`  the rayon reference kernels, generic over f32/f64;
//! - `gpu/`  the driver interface shared by CUDA and the emulator, and the
//!   launch code of every kernel in `kernels/*.cu`.

pub mod comm;
pub mod cpu;
pub mod device;
pub mod dtype;
pub mod error;
pub mod geom;
pub mod gpu;
pub mod ops;
pub mod philox;
pub mod precision;
pub mod profile;
pub mod shape;
pub mod storage;
pub mod tensor;

pub use device::Device;
pub use dtype::{DType, Element};
pub use error::{Result, TensorError};
pub use precision::Precision;
pub use shape::Shape;
pub use storage::{CpuStorage, Storage};
pub use tensor::Tensor;

/// Runs `$body` with `$T` bound to the Rust type of a CPU dtype.
#[macro_export]
macro_rules! with_element {
    ($dtype:expr, $T:ident, $body:block) => {
        match $dtype {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            // CpuStorage has no bf16 variant: a host buffer never reports it.
            $crate::DType::BF16 => return Err($crate::TensorError::bf16_on_cpu()),
        }
    };
}
