//! Upsample, concat/split and channel bias (`crates/tensor/src/cpu/layout.rs`)
//! at the U-Net's shapes, in bytes moved.

use super::common::{group_bytes, randn, F32};
use criterion::{Criterion, Throughput};
use diffuse_tensor::ops;
use std::hint::black_box;

pub fn bench(c: &mut Criterion) {
    let x = randn(&[64, 64, 7, 7], 1);
    let dy = randn(&[64, 64, 14, 14], 2);
    let mut g = group_bytes(c, "upsample_nearest2x B64 C64 7x7->14x14", 5 * x.numel() as u64 * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::upsample_nearest2x_forward(black_box(&x)).expect("up")));
    g.bench_function("backward", |bch| bch.iter(|| ops::upsample_nearest2x_backward(black_box(&dy)).expect("up bwd")));
    g.finish();

    let (a, b) = (randn(&[64, 64, 14, 14], 3), randn(&[64, 64, 14, 14], 4));
    let d = ops::concat_channels(&a, &b).expect("concat");
    let mut g = group_bytes(c, "concat_channels B64 64+64 14x14", 2 * d.numel() as u64 * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::concat_channels(black_box(&a), black_box(&b)).expect("cat")));
    g.bench_function("backward (split)", |bch| bch.iter(|| ops::split_channels(black_box(&d), 64).expect("split")));
    g.finish();

    let bias = randn(&[64, 64], 5);
    let mut g = group_bytes(c, "channel_bias B64 C64 14x14", 2 * a.numel() as u64 * F32);
    g.bench_function("forward", |bch| {
        bch.iter(|| ops::add_channel_bias(black_box(&a), black_box(&bias)).expect("bias"))
    });
    g.throughput(Throughput::Bytes(a.numel() as u64 * F32));
    g.bench_function("backward", |bch| bch.iter(|| ops::channel_bias_backward(black_box(&a)).expect("bias bwd")));
    g.finish();
}
