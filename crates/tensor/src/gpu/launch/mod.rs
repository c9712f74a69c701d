//! Launch code for every kernel in `kernels/*.cu`, one file per op family:
//! grid, block and shared-memory sizes, workspaces and argument packing.
//! The same code drives the real GPU (`gpu::cuda`) and the emulator.
//!
//! Callers (`ops/*.rs`) have already checked shapes, dtypes and devices;
//! these functions take the checked sizes and only reject what the kernels
//! cannot index (sizes past i32 where a kernel uses int). Every function
//! allocates and returns its outputs (or updates in place where the op is
//! in place) on the inputs' device.
//!
//! | file | kernels (kernels/*.cu) |
//! | --- | --- |
//! | `cast.rs` | cast.cu (f32 <-> bf16 storage) |
//! | `conv2d.rs` | conv2d.cu |
//! | `conv2d_tc.rs` | conv2d_fwd_tc.cu, conv2d_bwd_data_tc.cu, conv2d_bwd_weight_tc.cu (tensor cores) |
//! | `group_norm.rs` | group_norm.cu |
//! | `attention.rs` | attention.cu |
//! | `attention_tc.rs` | attention_tc.cu (tensor cores; attention.cu's row dot) |
//! | `linear.rs` | linear.cu |
//! | `linear_tc.rs` | linear_fwd_tc.cu, linear_bwd_tc.cu (tensor cores) |
//! | `silu.rs` | silu.cu |
//! | `elementwise.rs` | elementwise.cu |
//! | `layout.rs` | layout.cu |
//! | `embedding.rs` | embedding.cu |
//! | `noise.rs` | noise.cu |
//! | `loss.rs` | loss.cu |
//! | `dropout.rs` | dropout.cu |
//! | `optim.rs` | optim.cu |
//! | `sampling.rs` | sampling.cu |
//! | `reduce.rs` | reduce.cu (second pass of the split reductions) |

pub mod attention;
pub mod attention_tc;
pub mod cast;
pub mod conv2d;
pub mod conv2d_tc;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod group_norm;
pub mod layout;
pub mod linear;
pub mod linear_tc;
pub mod loss;
pub mod noise;
pub mod optim;
pub mod reduce;
pub mod sampling;
pub mod silu;

use super::kernels::Kernel;
use super::{Dim3, GpuDevice, GpuStorage, KernelArg, Launch};
use crate::{Result, TensorError};

/// Threads per block of every 1-D kernel.
pub const BLOCK: u32 = 256;

/// Most blocks a grid-stride kernel is launched with (about 60 per SM of an
/// H100; the loop covers any n).
pub const MAX_GRID: u64 = 8192;

/// The grid of a grid-stride kernel over `items` work items.
pub(crate) fn grid_for(items: u64) -> Dim3 {
    Dim3::x(items.div_ceil(BLOCK as u64).clamp(1, MAX_GRID) as u32)
}

/// The Philox blocks (4 elements each) that cover elements
/// [offset, offset + n): one thread each in the noise kernel (dropout's
/// blocks serve 8 elements: `launch/dropout.rs`).
pub(crate) fn philox_blocks(offset: u64, n: usize) -> u64 {
    (offset + n as u64).div_ceil(4) - offset / 4
}

/// Launches `kernel` with block 256 and no dynamic shared memory.
pub(crate) fn run(dev: &GpuDevice, kernel: &'static Kernel, grid: Dim3, args: &[KernelArg]) -> Result<()> {
    run_shared(dev, kernel, grid, Dim3::x(BLOCK), 0, args)
}

pub(crate) fn run_shared(
    dev: &GpuDevice,
    kernel: &'static Kernel,
    grid: Dim3,
    block: Dim3,
    shared_bytes: u32,
    args: &[KernelArg],
) -> Result<()> {
    dev.launch(&Launch { kernel, grid, block, shared_bytes, args })
}

/// A size as a kernel's `int` parameter, or a clear error.
pub(crate) fn int(op: &'static str, what: &str, v: usize) -> Result<KernelArg> {
    i32::try_from(v)
        .map(KernelArg::I32)
        .map_err(|_| TensorError::invalid(op, format!("{what} = {v} exceeds the GPU kernels' 32-bit index range")))
}

/// Errors unless `v` fits the kernels' 32-bit `int` arithmetic.
pub(crate) fn check_i32(op: &'static str, what: &str, v: usize) -> Result<()> {
    int(op, what, v).map(|_| ())
}

pub(crate) fn u64_arg(v: usize) -> KernelArg {
    KernelArg::U64(v as u64)
}

/// A grid dimension (y or z) within CUDA's 65535 limit.
pub(crate) fn grid_dim_yz(op: &'static str, what: &str, v: usize) -> Result<u32> {
    if v == 0 || v > 65535 {
        return Err(TensorError::invalid(op, format!("{what} = {v} is outside the GPU grid's 1..=65535")));
    }
    Ok(v as u32)
}

/// Whether `x` (an input named `what`) is stored in bf16; an error unless
/// it then meets the bf16 tensor cores, whose `_bf16in` kernels are the
/// only ones that read bf16.
pub(crate) fn bf16_input(op: &'static str, what: &str, x: &GpuStorage, p: crate::Precision) -> Result<bool> {
    match (x.dtype(), p) {
        (crate::DType::BF16, crate::Precision::Bf16) => Ok(true),
        (crate::DType::BF16, _) => Err(TensorError::invalid(
            op,
            format!("{what}: bf16 storage needs precision bf16 (the {p} kernels read f32); convert to f32 first"),
        )),
        _ => Ok(false),
    }
}

/// Storage for `len` f32 elements on `dev`.
pub(crate) fn alloc(dev: &GpuDevice, len: usize) -> Result<GpuStorage> {
    dev.alloc_f32(len)
}

/// A workspace of `len` f64 values (two f32 slots each).
pub(crate) fn alloc_f64(dev: &GpuDevice, len: usize) -> Result<GpuStorage> {
    dev.alloc_f32(2 * len.max(1))
}

/// Uploads u64 values (device pointers, lengths) into a new buffer.
pub(crate) fn upload_u64(dev: &GpuDevice, values: &[u64]) -> Result<GpuStorage> {
    let s = dev.alloc_f32(2 * values.len().max(1))?;
    dev.driver().htod(bytemuck::cast_slice(values), s.ptr())?;
    Ok(s)
}

/// Downloads one f64 from the start of a buffer.
pub(crate) fn download_f64(s: &GpuStorage) -> Result<f64> {
    let mut b = [0u8; 8];
    s.device().driver().dtoh(s.ptr(), &mut b)?;
    Ok(f64::from_le_bytes(b))
}
