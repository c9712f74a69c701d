//! Elementwise arithmetic (`crates/tensor/src/cpu/elementwise.rs`) at an
//! MNIST U-Net activation size, in bytes moved.

use super::common::{group_bytes, randn, F32};
use criterion::{Criterion, Throughput};
use diffuse_tensor::ops;
use std::hint::black_box;

pub fn bench(c: &mut Criterion) {
    let shape = [64, 64, 14, 14];
    let (a, b) = (randn(&shape, 1), randn(&shape, 2));
    let n = a.numel() as u64;
    let mut g = group_bytes(c, "elementwise B64 C64 14x14", 3 * n * F32);
    g.bench_function("add", |bch| bch.iter(|| ops::add(black_box(&a), black_box(&b)).expect("add")));
    g.bench_function("sub", |bch| bch.iter(|| ops::sub(black_box(&a), black_box(&b)).expect("sub")));
    g.bench_function("mul", |bch| bch.iter(|| ops::mul(black_box(&a), black_box(&b)).expect("mul")));
    g.bench_function("add_scaled", |bch| {
        bch.iter(|| ops::add_scaled(black_box(&a), black_box(&b), 0.5).expect("axpy"))
    });
    let mut acc = a.clone();
    g.bench_function("add_in_place", |bch| bch.iter(|| ops::add_in_place(&mut acc, black_box(&b)).expect("acc")));
    g.throughput(Throughput::Bytes(2 * n * F32));
    g.bench_function("scale", |bch| bch.iter(|| ops::scale(black_box(&a), 0.5).expect("scale")));
    g.bench_function("scale_in_place", |bch| bch.iter(|| ops::scale_in_place(&mut acc, 0.999).expect("scale")));
    g.finish();
}
