//! AdamW, EMA and the global gradient norm (`crates/tensor/src/cpu/optim.rs`)
//! over the MNIST preset's parameter count, in bytes moved.

use super::common::{group_bytes, randn, F32, MNIST_PARAMS};
use criterion::{Criterion, Throughput};
use diffuse_tensor::ops::{self, AdamWParams};
use std::hint::black_box;

pub fn bench(c: &mut Criterion) {
    let n = MNIST_PARAMS;
    let grad = randn(&[n], 1);
    let (mut p, mut m, mut v) = (randn(&[n], 2), randn(&[n], 3), randn(&[n], 4));
    let h = AdamWParams { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    // reads p, g, m, v and writes p, m, v
    let mut g = group_bytes(c, "optimiser 1,623,169 params", 7 * n as u64 * F32);
    let mut step = 0u64;
    g.bench_function("adamw_step", |bch| {
        bch.iter(|| {
            step += 1;
            ops::adamw_step(&mut p, black_box(&grad), &mut m, &mut v, &h, step).expect("adamw")
        })
    });
    g.throughput(Throughput::Bytes(3 * n as u64 * F32));
    let mut ema = randn(&[n], 5);
    g.bench_function("ema_update", |bch| bch.iter(|| ops::ema_update(&mut ema, black_box(&p), 0.9999).expect("ema")));
    g.throughput(Throughput::Bytes(n as u64 * F32));
    g.bench_function("global_l2_norm", |bch| bch.iter(|| ops::global_l2_norm(&[black_box(&grad)]).expect("norm")));
    g.finish();
}
