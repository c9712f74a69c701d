//! Criterion benchmarks of the small CPU ops (elementwise, layout, embedding,
//! noise, loss, dropout, optimiser) at the MNIST U-Net's sizes. These ops are
//! memory bound, so throughput is in bytes read plus bytes written and
//! criterion's "GiB/s" compares directly with the machine's memory bandwidth.
//!
//! Run: `cargo bench --bench elementwise` (about a minute), or filter, e.g.
//! `cargo bench --bench elementwise -- adamw`.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use diffuse_tensor::ops::{self, AdamWParams};
use diffuse_tensor::{DType, Device, Tensor};
use std::hint::black_box;
use std::time::Duration;

/// Parameters of the MNIST U-Net preset.
const MNIST_PARAMS: usize = 1_623_169;
const F32: u64 = 4;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape.to_vec(), seed, 0, DType::F32, &Device::Cpu).expect("randn")
}

/// A group with small sample counts so the whole file runs in about a minute.
fn group<'a>(c: &'a mut Criterion, name: &str, bytes: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_millis(700));
    g.throughput(Throughput::Bytes(bytes));
    g
}

fn bench_elementwise(c: &mut Criterion) {
    let shape = [64, 64, 14, 14];
    let (a, b) = (randn(&shape, 1), randn(&shape, 2));
    let n = a.numel() as u64;
    let mut g = group(c, "elementwise B64 C64 14x14", 3 * n * F32);
    g.bench_function("add", |bch| bch.iter(|| ops::add(black_box(&a), black_box(&b)).expect("add")));
    g.bench_function("sub", |bch| bch.iter(|| ops::sub(black_box(&a), black_box(&b)).expect("sub")));
    g.bench_function("mul", |bch| bch.iter(|| ops::mul(black_box(&a), black_box(&b)).expect("mul")));
    g.bench_function("add_scaled", |bch| {
        bch.iter(|| ops::add_scaled(black_box(&a), black_box(&b), 0.5).expect("axpy"))
    });
    let mut acc = a.clone();
    g.bench_function("add_in_place", |bch| bch.iter(|| ops::add_in_place(&mut acc, black_box(&b)).expect("acc")));
    g.throughput(Throughput::Bytes(2 * n * F32));
    g.bench_function("scale", |bch| bch.iter(|| ops::scale(black_box(&a), 0.5).expect("scale")));
    g.bench_function("scale_in_place", |bch| bch.iter(|| ops::scale_in_place(&mut acc, 0.999).expect("scale")));
    g.finish();
}

/// What the diffusion targets and the samplers add: per-image scaling and
/// the x0 clamp, at an MNIST batch.
fn bench_sampling(c: &mut Criterion) {
    let x = randn(&[64, 1, 28, 28], 3);
    let s = randn(&[64], 4);
    let n = x.numel() as u64;
    let mut g = group(c, "sampling B64x1x28x28", 2 * n * F32);
    g.bench_function("scale_per_sample", |bch| {
        bch.iter(|| ops::scale_per_sample(black_box(&x), black_box(&s)).expect("scale_per_sample"))
    });
    g.bench_function("clamp", |bch| bch.iter(|| ops::clamp(black_box(&x), -1.0, 1.0).expect("clamp")));
    g.finish();
}

fn bench_layout(c: &mut Criterion) {
    let x = randn(&[64, 64, 7, 7], 1);
    let dy = randn(&[64, 64, 14, 14], 2);
    let mut g = group(c, "upsample_nearest2x B64 C64 7x7->14x14", 5 * x.numel() as u64 * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::upsample_nearest2x_forward(black_box(&x)).expect("up")));
    g.bench_function("backward", |bch| bch.iter(|| ops::upsample_nearest2x_backward(black_box(&dy)).expect("up bwd")));
    g.finish();

    let (a, b) = (randn(&[64, 64, 14, 14], 3), randn(&[64, 64, 14, 14], 4));
    let d = ops::concat_channels(&a, &b).expect("concat");
    let mut g = group(c, "concat_channels B64 64+64 14x14", 2 * d.numel() as u64 * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::concat_channels(black_box(&a), black_box(&b)).expect("cat")));
    g.bench_function("backward (split)", |bch| bch.iter(|| ops::split_channels(black_box(&d), 64).expect("split")));
    g.finish();

    let bias = randn(&[64, 64], 5);
    let mut g = group(c, "channel_bias B64 C64 14x14", 2 * a.numel() as u64 * F32);
    g.bench_function("forward", |bch| {
        bch.iter(|| ops::add_channel_bias(black_box(&a), black_box(&bias)).expect("bias"))
    });
    g.throughput(Throughput::Bytes(a.numel() as u64 * F32));
    g.bench_function("backward", |bch| bch.iter(|| ops::channel_bias_backward(black_box(&a)).expect("bias bwd")));
    g.finish();

    let t = Tensor::from_vec((0..64).map(|i| (i * 15) as f32).collect::<Vec<_>>(), [64]).expect("t");
    let mut g = group(c, "timestep_embedding B64 dim128", 64 * 128 * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::timestep_embedding(black_box(&t), 128).expect("temb")));
    g.finish();
}

fn bench_noise_loss_dropout(c: &mut Criterion) {
    let x0 = randn(&[64, 1, 28, 28], 1);
    let n = x0.numel() as u64;
    let a = Tensor::full([64], 0.8, DType::F32, &Device::Cpu).expect("a");
    let b = Tensor::full([64], 0.6, DType::F32, &Device::Cpu).expect("b");
    let mut g = group(c, "noise_add B64x1x28x28", 3 * n * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::noise_add(black_box(&x0), &a, &b, 42, 7, 0).expect("noise")));
    g.throughput(Throughput::Bytes(2 * n * F32));
    g.bench_function("backward", |bch| bch.iter(|| ops::noise_add_backward(black_box(&x0), &a).expect("noise bwd")));
    g.finish();

    let target = randn(&[64, 1, 28, 28], 2);
    let mut g = group(c, "mse_loss B64x1x28x28", 2 * n * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::mse_loss_forward(black_box(&x0), &target).expect("mse")));
    g.throughput(Throughput::Bytes(3 * n * F32));
    g.bench_function("backward", |bch| {
        bch.iter(|| ops::mse_loss_backward(black_box(&x0), &target, 1.0).expect("mse bwd"))
    });
    g.finish();

    let x = randn(&[64, 64, 14, 14], 3);
    let mut g = group(c, "dropout p=0.1 B64 C64 14x14", 2 * x.numel() as u64 * F32);
    g.bench_function("forward", |bch| bch.iter(|| ops::dropout_forward(black_box(&x), 0.1, 1, 2, 3).expect("drop")));
    g.bench_function("backward", |bch| bch.iter(|| ops::dropout_backward(black_box(&x), 0.1, 1, 2, 3).expect("drop")));
    g.finish();
}

fn bench_optim(c: &mut Criterion) {
    let n = MNIST_PARAMS;
    let grad = randn(&[n], 1);
    let (mut p, mut m, mut v) = (randn(&[n], 2), randn(&[n], 3), randn(&[n], 4));
    let h = AdamWParams { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    // reads p, g, m, v and writes p, m, v
    let mut g = group(c, "optimiser 1,623,169 params", 7 * n as u64 * F32);
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

criterion_group!(benches, bench_elementwise, bench_sampling, bench_layout, bench_noise_loss_dropout, bench_optim);
criterion_main!(benches);
