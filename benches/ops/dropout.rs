//! Dropout (`crates/tensor/src/cpu/dropout.rs`) at a U-Net activation
//! size, in bytes moved.

use super::common::{group_bytes, randn, F32};
use criterion::Criterion;
use diffuse_tensor::ops;
use std::hint::black_box;

pub fn bench(c: &mut Criterion) {
    let x = randn(&[64, 64, 14, 14], 3);
    let mut g = group_bytes(c, "dropout p=0.1 B64 C64 14x14", 2 * x.numel() as u64 * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::dropout_forward(black_box(&x), 0.1, 1, 2, 3).expect("drop")));
    g.bench_function("backward", |bch| bch.iter(|| ops::dropout_backward(black_box(&x), 0.1, 1, 2, 3).expect("drop")));
    g.finish();
}
