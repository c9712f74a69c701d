//! The sinusoidal timestep embedding (`crates/tensor/src/cpu/embedding.rs`).

use super::common::{group_bytes, F32};
use criterion::Criterion;
use diffuse_tensor::{ops, Tensor};
use std::hint::black_box;

pub fn bench(c: &mut Criterion) {
    let t = Tensor::from_vec((0..64).map(|i| (i * 15) as f32).collect::<Vec<_>>(), [64]).expect("t");
    let mut g = group_bytes(c, "timestep_embedding B64 dim128", 64 * 128 * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::timestep_embedding(black_box(&t), 128).expect("temb")));
    g.finish();
}
