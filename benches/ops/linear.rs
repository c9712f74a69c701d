//! linear (`crates/tensor/src/cpu/linear.rs`) at the U-Net's shapes, forward and
//! backward, f32.

use super::common::{group, randn};
use criterion::Criterion;
use diffuse_tensor::ops;
use std::hint::black_box;

pub fn bench(c: &mut Criterion) {
    let (x, w, b, dy) = (randn(&[64, 128], 9), randn(&[128, 128], 10), randn(&[128], 11), randn(&[64, 128], 12));
    let mut g = group(c, "linear B64 128->128");
    g.bench_function("forward", |bch| bch.iter(|| ops::linear_forward(black_box(&x), &w, Some(&b)).expect("forward")));
    g.bench_function("backward", |bch| bch.iter(|| ops::linear_backward(black_box(&dy), &x, &w).expect("backward")));
    g.finish();
}
