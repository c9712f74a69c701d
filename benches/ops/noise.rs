//! The fused noise-add of q_sample (`crates/tensor/src/cpu/noise.rs`) at an
//! MNIST batch, in bytes moved.

use super::common::{group_bytes, randn, F32};
use criterion::{Criterion, Throughput};
use diffuse_tensor::{ops, DType, Device, Tensor};
use std::hint::black_box;

pub fn bench(c: &mut Criterion) {
    let x0 = randn(&[64, 1, 28, 28], 1);
    let n = x0.numel() as u64;
    let a = Tensor::full([64], 0.8, DType::F32, &Device::Cpu).expect("a");
    let b = Tensor::full([64], 0.6, DType::F32, &Device::Cpu).expect("b");
    let mut g = group_bytes(c, "noise_add B64x1x28x28", 3 * n * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::noise_add(black_box(&x0), &a, &b, 42, 7, 0).expect("noise")));
    g.throughput(Throughput::Bytes(2 * n * F32));
    g.bench_function("backward", |bch| bch.iter(|| ops::noise_add_backward(black_box(&x0), &a).expect("noise bwd")));
    g.finish();
}
