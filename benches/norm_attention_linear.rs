//! Criterion benchmarks of the CPU group norm, attention and linear ops
//! (`crates/tensor/src/cpu/{group_norm,attention,linear}.rs`) at the U-Net's
//! shapes, forward and backward, f32.
//!
//! Run: `cargo bench --bench norm_attention_linear` (about a minute), or
//! filter, e.g. `cargo bench --bench norm_attention_linear -- "attention B64 N196"`.

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use diffuse_tensor::ops;
use diffuse_tensor::{DType, Device, Tensor};
use std::hint::black_box;
use std::time::Duration;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape.to_vec(), seed, 0, DType::F32, &Device::Cpu).expect("bench shapes are valid")
}

/// Few samples, short windows: the whole file runs in about a minute.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    g
}

fn bench_group_norm(c: &mut Criterion) {
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
        g.bench_function("backward", |bch| {
            bch.iter(|| {
                ops::group_norm_backward(black_box(&dy), &x, &gamma, &beta, &f.mean, &f.rstd, groups, silu)
                    .expect("backward")
            })
        });
        g.finish();
    }
}

fn bench_attention(c: &mut Criterion) {
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

fn bench_linear(c: &mut Criterion) {
    let (x, w, b, dy) = (randn(&[64, 128], 9), randn(&[128, 128], 10), randn(&[128], 11), randn(&[64, 128], 12));
    let mut g = group(c, "linear B64 128->128");
    g.bench_function("forward", |bch| bch.iter(|| ops::linear_forward(black_box(&x), &w, Some(&b)).expect("forward")));
    g.bench_function("backward", |bch| bch.iter(|| ops::linear_backward(black_box(&dy), &x, &w).expect("backward")));
    g.finish();
}

criterion_group!(benches, bench_group_norm, bench_attention, bench_linear);
criterion_main!(benches);
