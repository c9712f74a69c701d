//! group norm (`crates/tensor/src/cpu/group_norm.rs`) at the U-Net's shapes, forward and
//! backward, f32.

use super::common::{group, randn};
use criterion::Criterion;
use diffuse_tensor::ops;
use std::hint::black_box;

pub fn bench(c: &mut Criterion) {
    let (b, ch, hw, groups) = (64, 64, 14, 8);
    let x = randn(&[b, ch, hw, hw], 1);
    let gamma = randn(&[ch], 2);
    let beta = randn(&[ch], 3);
    let dy = randn(&[b, ch, hw, hw], 4);
    for silu in [false, true] {
        let name = format!("group_norm B64 C64 14x14 G8{}", if silu { " +silu" } else { "" });
        let mut g = group(c, &name);
        let f = ops::group_norm_forward(&x, &gamma, &beta, groups, 1e-6, silu).expect("forward");
        g.bench_function("forward", |bch| {
            bch.iter(|| ops::group_norm_forward(black_box(&x), &gamma, &beta, groups, 1e-6, silu).expect("forward"))
        });
        g.bench_function("apply", |bch| {
            bch.iter(|| {
                ops::group_norm_apply(black_box(&x), &gamma, &beta, &f.mean, &f.rstd, groups, silu).expect("apply")
            })
        });
        g.bench_function("backward", |bch| {
            bch.iter(|| {
                ops::group_norm_backward(black_box(&dy), &x, &gamma, &beta, &f.mean, &f.rstd, groups, silu)
                    .expect("backward")
            })
        });
        // conv2's input in a residual block is dropout(silu(norm2(h))), and an
        // identity block's dx takes dy: both run in the backward's pass
        let dr = ops::DropoutAt { p: 0.1, seed: 5, step: 1.into(), stream: 2, offset: 0 };
        let (_, mask) = dr.forward_keeping_mask(&f.y).expect("dropout");
        let residual = randn(&[b, ch, hw, hw], 5);
        g.bench_function("dropout backward, backward, residual add", |bch| {
            bch.iter(|| {
                let m = mask.as_ref().expect("a CPU mask");
                let masked = ops::dropout_backward_with_mask(black_box(&dy), m).expect("dropout");
                let mut d = ops::group_norm_backward(&masked, &x, &gamma, &beta, &f.mean, &f.rstd, groups, silu)
                    .expect("backward");
                ops::add_in_place(&mut d.dx, &residual).expect("add");
                d
            })
        });
        g.bench_function("backward fused with both", |bch| {
            let fused = ops::GroupNormBackwardFusion { dy_mask: mask.as_ref(), residual: Some(&residual) };
            bch.iter(|| {
                ops::group_norm_backward_fused(black_box(&dy), &x, &gamma, &beta, &f.mean, &f.rstd, groups, silu, fused)
                    .expect("backward")
            })
        });
        g.finish();
    }
}
