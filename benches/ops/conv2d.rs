//! conv2d (`crates/tensor/src/cpu/conv2d.rs`) at the U-Net's shapes.
//! Throughput is in FLOPs (2 * B * Co * Ci * KH * KW * Ho * Wo per product),
//! so criterion's "Gelem/s" reads as GFLOP/s; the bias gradient counts one
//! element of dy per "FLOP".

use super::common::{group, randn};
use criterion::{Criterion, Throughput};
use diffuse_tensor::ops::{self, Conv2dParams};
use diffuse_tensor::Precision;
use std::hint::black_box;

struct Case {
    name: &'static str,
    b: usize,
    ci: usize,
    co: usize,
    hw: usize,
    k: usize,
    p: Conv2dParams,
}

fn cases() -> Vec<Case> {
    vec![
        Case { name: "conv2d_3x3 B64 64->64 14x14", b: 64, ci: 64, co: 64, hw: 14, k: 3, p: Conv2dParams::same(3) },
        Case { name: "conv2d_3x3 B64 32->32 28x28", b: 64, ci: 32, co: 32, hw: 28, k: 3, p: Conv2dParams::same(3) },
        Case { name: "conv2d_3x3 B64 64->64 7x7", b: 64, ci: 64, co: 64, hw: 7, k: 3, p: Conv2dParams::same(3) },
        Case {
            name: "conv2d_3x3s2 B64 64->64 14x14 (down)",
            b: 64,
            ci: 64,
            co: 64,
            hw: 14,
            k: 3,
            p: Conv2dParams::down2(),
        },
        Case { name: "conv2d_1x1 B64 64->128 14x14", b: 64, ci: 64, co: 128, hw: 14, k: 1, p: Conv2dParams::same(1) },
        // The cifar10 preset's widest levels at its bench batch.
        Case { name: "conv2d_3x3 B8 128->128 32x32", b: 8, ci: 128, co: 128, hw: 32, k: 3, p: Conv2dParams::same(3) },
        Case { name: "conv2d_3x3 B8 256->256 16x16", b: 8, ci: 256, co: 256, hw: 16, k: 3, p: Conv2dParams::same(3) },
        Case { name: "conv2d_3x3 B8 256->256 8x8", b: 8, ci: 256, co: 256, hw: 8, k: 3, p: Conv2dParams::same(3) },
        Case { name: "conv2d_3x3 B8 256->256 4x4", b: 8, ci: 256, co: 256, hw: 4, k: 3, p: Conv2dParams::same(3) },
    ]
}

pub fn bench(c: &mut Criterion) {
    for case in cases() {
        let (ho, wo) = case.p.output_hw(case.hw, case.hw, case.k, case.k).expect("bench shapes are valid");
        let x = randn(&[case.b, case.ci, case.hw, case.hw], 1);
        let w = randn(&[case.co, case.ci, case.k, case.k], 2);
        let bias = randn(&[case.co], 3);
        let dy = randn(&[case.b, case.co, ho, wo], 4);
        let flops = (2 * case.b * case.co * case.ci * case.k * case.k * ho * wo) as u64;

        let mut g = group(c, case.name);
        g.throughput(Throughput::Elements(flops));
        g.bench_function("forward", |bch| {
            bch.iter(|| ops::conv2d_forward(black_box(&x), black_box(&w), Some(&bias), &case.p).expect("forward"))
        });
        // The residual block's conv: bias, per-image time-embedding term and residual added per image.
        let sample_bias = randn(&[case.b, case.co], 5);
        let epi = ops::ConvEpilogue { sample_bias: Some(&sample_bias), residual: Some(&dy) };
        g.bench_function("forward_fused", |bch| {
            bch.iter(|| {
                ops::conv2d_forward_fused(black_box(&x), black_box(&w), Some(&bias), &case.p, Precision::Fp32, epi)
                    .expect("forward fused")
            })
        });
        g.bench_function("backward_data", |bch| {
            bch.iter(|| ops::conv2d_backward_data(black_box(&dy), black_box(&w), x.shape(), &case.p).expect("bwd data"))
        });
        g.bench_function("backward_weight", |bch| {
            bch.iter(|| ops::conv2d_backward_weight(black_box(&dy), black_box(&x), w.shape(), &case.p).expect("bwd w"))
        });
        g.throughput(Throughput::Elements(dy.numel() as u64));
        g.bench_function("backward_bias", |bch| bch.iter(|| ops::conv2d_backward_bias(black_box(&dy)).expect("bwd b")));
        g.finish();
    }
}
