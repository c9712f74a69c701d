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
        g.finish();
    }
}
