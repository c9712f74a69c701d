//! What every op benchmark shares: seeded inputs and criterion groups with
//! short windows, so the whole suite runs in a few minutes.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use diffuse_tensor::{DType, Device, Tensor};
use std::time::Duration;

pub const F32: u64 = 4;

/// Parameters of the MNIST U-Net preset.
pub const MNIST_PARAMS: usize = 1_623_169;

pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape.to_vec(), seed, 0, DType::F32, &Device::Cpu).expect("bench shapes are valid")
}

/// A group with 10 samples and short windows.
pub fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_millis(700));
    g
}

/// A memory-bound group: throughput in bytes read plus written, so
/// criterion's "GiB/s" compares directly with the memory bandwidth.
pub fn group_bytes<'a>(c: &'a mut Criterion, name: &str, bytes: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut g = group(c, name);
    g.throughput(Throughput::Bytes(bytes));
    g
}
