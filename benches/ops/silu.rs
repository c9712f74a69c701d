//! SiLU (`crates/tensor/src/cpu/silu.rs`) at a U-Net activation size, in
//! bytes moved.

use super::common::{group_bytes, randn, F32};
use criterion::Criterion;
use diffuse_tensor::ops;
use std::hint::black_box;

pub fn bench(c: &mut Criterion) {
    let x = randn(&[64, 64, 14, 14], 1);
    let dy = randn(&[64, 64, 14, 14], 2);
    let n = x.numel() as u64;
    let mut g = group_bytes(c, "silu B64 C64 14x14", 2 * n * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::silu_forward(black_box(&x)).expect("silu")));
    g.bench_function("backward", |bch| bch.iter(|| ops::silu_backward(black_box(&dy), &x).expect("silu bwd")));
    g.finish();
}
