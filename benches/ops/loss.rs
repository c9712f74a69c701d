//! The MSE loss (`crates/tensor/src/cpu/loss.rs`) at an MNIST batch, in
//! bytes moved.

use super::common::{group_bytes, randn, F32};
use criterion::{Criterion, Throughput};
use diffuse_tensor::ops;
use std::hint::black_box;

pub fn bench(c: &mut Criterion) {
    let x0 = randn(&[64, 1, 28, 28], 1);
    let n = x0.numel() as u64;
    let target = randn(&[64, 1, 28, 28], 2);
    let mut g = group_bytes(c, "mse_loss B64x1x28x28", 2 * n * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::mse_loss_forward(black_box(&x0), &target).expect("mse")));
    g.throughput(Throughput::Bytes(3 * n * F32));
    g.bench_function("backward", |bch| {
        bch.iter(|| ops::mse_loss_backward(black_box(&x0), &target, 1.0).expect("mse bwd"))
    });
    g.finish();
}
