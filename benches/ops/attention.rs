//! attention (`crates/tensor/src/cpu/attention.rs`) at the U-Net's shapes, forward and
//! backward, f32.

use super::common::{group, randn};
use criterion::Criterion;
use diffuse_tensor::ops;
use std::hint::black_box;

pub fn bench(c: &mut Criterion) {
    for n in [49, 196] {
        let shape = [64, 64, n];
        let (q, k, v, dout) = (randn(&shape, 5), randn(&shape, 6), randn(&shape, 7), randn(&shape, 8));
        let mut g = group(c, &format!("attention B64 N{n} C64"));
        let f = ops::attention_forward(&q, &k, &v).expect("forward");
        g.bench_function("forward", |bch| bch.iter(|| ops::attention_forward(black_box(&q), &k, &v).expect("forward")));
        g.bench_function("backward", |bch| {
            bch.iter(|| ops::attention_backward(black_box(&dout), &q, &k, &v, &f.out, &f.lse).expect("backward"))
        });
        g.finish();
    }
}
