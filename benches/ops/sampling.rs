//! Per-image scaling and the x0 clamp (`crates/tensor/src/cpu/sampling.rs`)
//! at an MNIST batch, in bytes moved.

use super::common::{group_bytes, randn, F32};
use criterion::Criterion;
use diffuse_tensor::ops;
use std::hint::black_box;

/// What the diffusion targets and the samplers add: per-image scaling and
/// the x0 clamp, at an MNIST batch.
pub fn bench(c: &mut Criterion) {
    let x = randn(&[64, 1, 28, 28], 3);
    let s = randn(&[64], 4);
    let n = x.numel() as u64;
    let mut g = group_bytes(c, "sampling B64x1x28x28", 2 * n * F32);
    g.bench_function("scale_per_sample", |bch| {
        bch.iter(|| ops::scale_per_sample(black_box(&x), black_box(&s)).expect("scale_per_sample"))
    });
    g.bench_function("clamp", |bch| bch.iter(|| ops::clamp(black_box(&x), -1.0, 1.0).expect("clamp")));
    g.finish();
}
