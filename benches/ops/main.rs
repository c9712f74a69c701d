//! Criterion benchmarks of every op on the CPU, one file per op family with
//! the family's name (as in `crates/tensor/src/{ops,cpu}/`, `kernels/` and
//! `crates/tensor/tests/`), at the U-Net's shapes.
//!
//! Run all (a few minutes): `cargo bench --bench ops`; one family or case by
//! filter: `cargo bench --bench ops -- conv2d`, `cargo bench --bench ops --
//! "64->64 14x14/forward"`. The whole training and sampling step is
//! `benches/train_step.rs`.

mod attention;
mod common;
mod conv2d;
mod dropout;
mod elementwise;
mod embedding;
mod group_norm;
mod layout;
mod linear;
mod loss;
mod noise;
mod optim;
mod sampling;
mod silu;

use criterion::{criterion_group, criterion_main};

criterion_group!(
    benches,
    attention::bench,
    conv2d::bench,
    dropout::bench,
    elementwise::bench,
    embedding::bench,
    group_norm::bench,
    layout::bench,
    linear::bench,
    loss::bench,
    noise::bench,
    optim::bench,
    sampling::bench,
    silu::bench,
);
criterion_main!(benches);
