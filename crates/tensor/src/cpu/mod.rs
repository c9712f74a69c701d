//! The rayon CPU backend: the project's reference implementation of every
//! op. Each kernel here is generic over f32/f64, works on plain slices and is
//! deterministic: reductions use fixed chunks summed in a fixed order, never
//! an order that depends on how rayon schedules work.

pub mod attention;
pub mod conv2d;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod group_norm;
pub mod layout;
pub mod linear;
pub mod loss;
pub mod noise;
pub mod optim;
pub mod recycle;
pub mod reduced;
pub mod sampling;
pub mod silu;
pub mod simd;

/// Fixed work-chunk size for parallel reductions, independent of the thread
/// count so results are bit-identical on any machine.
pub const REDUCE_CHUNK: usize = 4096;
