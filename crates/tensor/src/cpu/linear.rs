//! Fully connected layer on the CPU: `y = x w^T + b` for `x` [N, In],
//! `w` [Out, In], `b` [Out], and its backward. The products go through
//! `cpu::gemm` (whose sums over the inner dimension run in a fixed order for
//! any thread count); the bias gradient sums rows in row order.

use super::gemm::{matmul, MatRef, Threads};
use crate::geom::LinearDims;
use crate::Element;
use rayon::prelude::*;

/// `y = x w^T (+ b)`, `y` row-major [n, d_out].
pub fn linear_forward<T: Element>(x: &[T], w: &[T], b: Option<&[T]>, d: LinearDims, y: &mut [T]) {
    // Seed each row with the bias, then accumulate the product onto it.
    if let Some(b) = b {
        y.par_chunks_mut(d.d_out.max(1)).for_each(|row| row.copy_from_slice(b));
    }
    matmul(MatRef::row_major(x, d.n, d.d_in), MatRef::row_major_t(w, d.d_out, d.d_in), y, b.is_some(), Threads::Rayon);
}

/// `dx = dy w` [n, d_in], `dw = dy^T x` [d_out, d_in], `db = sum_rows dy` [d_out].
pub fn linear_backward<T: Element>(
    dy: &[T],
    x: &[T],
    w: &[T],
    d: LinearDims,
    dx: &mut [T],
    dw: &mut [T],
    db: &mut [T],
) {
    matmul(MatRef::row_major(dy, d.n, d.d_out), MatRef::row_major(w, d.d_out, d.d_in), dx, false, Threads::Rayon);
    matmul(MatRef::row_major_t(dy, d.n, d.d_out), MatRef::row_major(x, d.n, d.d_in), dw, false, Threads::Rayon);
    column_sums(dy, d.n, d.d_out, db);
}

/// Columns per parallel task of `column_sums`.
const COLS_PER_TASK: usize = 64;

/// `db = sum_rows dy` [d_out] alone (the reduced-precision path's bias
/// gradient, from the unrounded dy).
pub fn linear_backward_bias<T: Element>(dy: &[T], d: LinearDims, db: &mut [T]) {
    column_sums(dy, d.n, d.d_out, db);
}

/// `out[j] = sum_i m[i, j]` over a row-major [rows, cols] matrix, in f64 and
/// in row order (parallel over column blocks only, so the order is fixed).
fn column_sums<T: Element>(m: &[T], rows: usize, cols: usize, out: &mut [T]) {
    if cols == 0 {
        return;
    }
    out.par_chunks_mut(COLS_PER_TASK).enumerate().for_each(|(blk, out)| {
        let c0 = blk * COLS_PER_TASK;
        let mut acc = vec![0f64; out.len()];
        for row in m.chunks_exact(cols).take(rows) {
            for (a, &v) in acc.iter_mut().zip(&row[c0..c0 + out.len()]) {
                *a += v.to_f64();
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = T::from_f64(a);
        }
    });
}
