//! The sinusoidal timestep embedding and the class embedding
//! (`crates/tensor/src/cpu/embedding.rs`).

use super::common::{group_bytes, F32};
use criterion::Criterion;
use diffuse_tensor::{ops, Tensor};
use std::hint::black_box;

pub fn bench(c: &mut Criterion) {
    let t = Tensor::from_vec((0..64).map(|i| (i * 15) as f32).collect::<Vec<_>>(), [64]).expect("t");
    let mut g = group_bytes(c, "timestep_embedding B64 dim128", 64 * 128 * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::timestep_embedding(black_box(&t), 128).expect("temb")));
    g.finish();

    // The mnist preset's class table: 10 classes + "no class", 4ch = 128 wide.
    let table =
        Tensor::from_vec((0..11 * 128).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<_>>(), [11, 128]).expect("table");
    let labels: Vec<usize> = (0..64).map(|i| (i * 7) % 11).collect();
    let dout =
        Tensor::from_vec((0..64 * 128).map(|i| (i % 5) as f32 * 0.1).collect::<Vec<_>>(), [64, 128]).expect("dout");
    let mut g = group_bytes(c, "class_embedding B64 11x128", 64 * 128 * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::class_embedding(black_box(&table), &labels).expect("cemb")));
    g.bench_function("backward", |bch| {
        bch.iter(|| ops::class_embedding_backward(black_box(&dout), &labels, 11).expect("cemb bwd"))
    });
    g.finish();
}
