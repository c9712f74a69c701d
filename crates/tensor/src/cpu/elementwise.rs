//! Elementwise arithmetic on slices (add, sub, mul, scale, a + s*b and their
//! in-place forms), and the deterministic f64 sums behind the MSE loss, the
//! channel-bias gradient and the global gradient norm.
//!
//! Elementwise work is split into fixed chunks of `PAR_CHUNK` elements: big
//! enough that rayon's per-task cost is negligible, small enough that the
//! inner loops stay in cache and vectorise.

use super::REDUCE_CHUNK;
use crate::geom::Binary;
use crate::Element;
use rayon::prelude::*;
use std::ops::Range;

/// Elements per rayon task in elementwise loops.
pub const PAR_CHUNK: usize = 1 << 14;

/// out[i] = f(a[i], b[i]) in parallel chunks.
fn zip_map<T: Element>(a: &[T], b: &[T], out: &mut [T], f: impl Fn(T, T) -> T + Sync) {
    debug_assert!(a.len() == out.len() && b.len() == out.len());
    out.par_chunks_mut(PAR_CHUNK).zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK))).for_each(|(o, (a, b))| {
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            *o = f(a, b);
        }
    });
}

/// out = a (op) b. One loop per variant so the inner loop has no branch.
pub fn binary<T: Element>(op: Binary, a: &[T], b: &[T], out: &mut [T]) {
    match op {
        Binary::Add => zip_map(a, b, out, |a, b| a + b),
        Binary::Sub => zip_map(a, b, out, |a, b| a - b),
        Binary::Mul => zip_map(a, b, out, |a, b| a * b),
        Binary::AddScaled(s) => {
            let s = T::from_f64(s);
            zip_map(a, b, out, move |a, b| a + s * b)
        }
    }
}

/// out = s * x.
pub fn scale<T: Element>(x: &[T], s: f64, out: &mut [T]) {
    let s = T::from_f64(s);
    out.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = s * x;
        }
    });
}

/// acc += x.
pub fn add_assign<T: Element>(acc: &mut [T], x: &[T]) {
    debug_assert_eq!(acc.len(), x.len());
    acc.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)).for_each(|(a, x)| {
        for (a, &x) in a.iter_mut().zip(x) {
            *a += x;
        }
    });
}

/// t *= s.
pub fn scale_assign<T: Element>(t: &mut [T], s: f64) {
    let s = T::from_f64(s);
    t.par_chunks_mut(PAR_CHUNK).for_each(|t| {
        for v in t {
            *v *= s;
        }
    });
}

/// The sum over `0..n` of `partial(range)` for ranges of `REDUCE_CHUNK`
/// indices. Partial sums are computed in parallel but added in index order,
/// so the result has the same bits for any thread count.
pub fn chunked_sum_f64(n: usize, partial: impl Fn(Range<usize>) -> f64 + Sync) -> f64 {
    let chunks = n.div_ceil(REDUCE_CHUNK);
    let partials: Vec<f64> =
        (0..chunks).into_par_iter().map(|c| partial(c * REDUCE_CHUNK..((c + 1) * REDUCE_CHUNK).min(n))).collect();
    partials.iter().sum()
}

/// The sum over i of f(a[i], b[i]) in f64 (`a` and `b` equally long), in
/// eight interleaved accumulators combined in a fixed order: the same bits
/// every run, and the adds do not all wait on one running sum.
pub fn lane_sum_f64<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (a8, b8) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += f(a8[k], b8[k]);
        }
    }
    for (k, (&a, &b)) in ar.iter().zip(br).enumerate() {
        acc[k] += f(a, b);
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// Sum of squares of `x` in f64 (deterministic, see `chunked_sum_f64`).
pub fn sum_squares_f64<T: Element>(x: &[T]) -> f64 {
    chunked_sum_f64(x.len(), |r| {
        let x = &x[r];
        lane_sum_f64(x, x, |v, _| v.to_f64() * v.to_f64())
    })
}
