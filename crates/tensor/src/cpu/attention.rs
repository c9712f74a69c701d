//! Single-head self-attention on the CPU, forward and backward. Per batch
//! item, with q, k, v channel-major [C, N] (N tokens):
//! `s_ij = C^-0.5 sum_c q[c,i] k[c,j]`, `p_ij = softmax_j(s_ij)`,
//! `out[c,i] = sum_j p_ij v[c,j]`, and `lse_i = log sum_j exp(s_ij)`.
//!
//! Batch items run in parallel; inside one, the products are serial `gemm`
//! calls and softmax rows are summed serially, so results do not depend on
//! the thread count. The backward recomputes `p` from q, k and the saved lse
//! instead of storing the N x N weights. This file also holds the
//! branch-free `exp` that softmax and group norm's fused SiLU share.

use super::gemm::{matmul, MatRef, Threads};
use crate::geom::AttentionDims;
use crate::{DType, Element};
use rayon::prelude::*;

impl AttentionDims {
    /// Elements of one item's q, k, v or out.
    fn item(&self) -> usize {
        self.c * self.n
    }

    /// The score scale C^-0.5.
    fn scale<T: Element>(&self) -> T {
        T::from_f64((self.c as f64).sqrt().recip())
    }
}

/// `s = q^T k` (unscaled) into the row-major [n, n] buffer `s`.
fn raw_scores<T: Element>(q: &[T], k: &[T], c: usize, n: usize, s: &mut [T]) {
    matmul(MatRef::row_major_t(q, c, n), MatRef::row_major(k, c, n), s, false, Threads::Serial);
}

/// `e^x` for either element type, through a branch-free kernel per type so
/// that loops over slices vectorise (libm's `exp` is one call per element and
/// dominated softmax and SiLU). Inputs are clamped to the range where the
/// result is a normal float, so tiny results stand in for 0 and the largest
/// for overflow; NaN propagates.
#[inline(always)]
pub(crate) fn exp<T: Element>(x: T) -> T {
    if matches!(T::DTYPE, DType::F32) {
        T::from_f32(exp_f32(x.to_f32()))
    } else {
        T::from_f64(exp_f64(x.to_f64()))
    }
}

/// `e^x` in f64, within a few ulp.
#[inline(always)]
pub(crate) fn exp_f64(x: f64) -> f64 {
    // 1.5 * 2^52: adding it rounds to an integer held in the low mantissa bits
    // (no rounding instruction needed on baseline x86-64).
    const ROUND: f64 = 6_755_399_441_055_744.0;
    // ln 2 split so that n * LN2_HI is exact (fdlibm's constants).
    const LN2_HI: f64 = 0.693_147_180_369_123_8;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let x = if x > 709.0 { 709.0 } else { x };
    let x = if x < -708.0 { -708.0 } else { x };
    // x = n ln2 + r with |r| <= ln2 / 2, so e^x = 2^n e^r.
    let t = x * std::f64::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor series to r^13: truncation error below 1e-17 for |r| <= ln2 / 2.
    let mut p = INV_FACTORIAL[13];
    for k in (0..13).rev() {
        p = p * r + INV_FACTORIAL[k];
    }
    // 2^n, built from n's bits in t's mantissa.
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    p * f64::from_bits(n_bits.wrapping_add(1023) << 52)
}

/// `e^x` in f32, within a few ulp; the same scheme as [`exp_f64`] in f32
/// arithmetic, which vectorises twice as wide.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    const LN2_HI: f32 = 0.693_359_4; // = 355/512 exactly, so n * LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = if x > 88.0 { 88.0 } else { x };
    let x = if x < -87.0 { -87.0 } else { x };
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor series to r^7: truncation error below 6e-9 for |r| <= ln2 / 2.
    let mut p = INV_FACTORIAL[7] as f32;
    for k in (0..7).rev() {
        p = p * r + INV_FACTORIAL[k] as f32;
    }
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// 1/k! for k = 0..=13.
const INV_FACTORIAL: [f64; 14] = {
    let mut f = [1.0; 14];
    let mut k = 1;
    while k < 14 {
        f[k] = f[k - 1] / k as f64;
        k += 1;
    }
    f
};

/// Sum of a slice in f64 over fixed lanes combined in a fixed order.
fn sum_f64<T: Element>(xs: &[T]) -> f64 {
    let mut acc = [0f64; 4];
    let mut chunks = xs.chunks_exact(4);
    for ch in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(ch) {
            *a += x.to_f64();
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&x| x.to_f64()).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `row[j] = exp(row[j] * scale - shift)`.
fn exp_shifted<T: Element>(row: &mut [T], scale: T, shift: T) {
    for s in row.iter_mut() {
        *s = exp(*s * scale - shift);
    }
}

/// Turns one row of raw scores into softmax weights of the scaled scores and
/// returns their log-sum-exp. Subtracting the max keeps exp in range.
fn softmax_row<T: Element>(row: &mut [T], scale: T) -> T {
    let max = row.iter().fold(T::neg_infinity(), |m, &s| m.max(s * scale));
    exp_shifted(row, scale, max);
    let sum = sum_f64(row);
    let inv = T::from_f64(sum.recip());
    row.iter_mut().for_each(|p| *p *= inv);
    max + T::from_f64(sum.ln())
}

/// One item's softmax weights `p` [n, n] and lse [n].
fn weights_one<T: Element>(q: &[T], k: &[T], d: AttentionDims, p: &mut [T], lse: &mut [T]) {
    raw_scores(q, k, d.c, d.n, p);
    let scale = d.scale::<T>();
    for (row, l) in p.chunks_exact_mut(d.n).zip(lse) {
        *l = softmax_row(row, scale);
    }
}

/// Forward: `out` [b, c, n], `lse` [b, n].
pub fn attention_forward<T: Element>(q: &[T], k: &[T], v: &[T], d: AttentionDims, out: &mut [T], lse: &mut [T]) {
    let (item, n) = (d.item(), d.n);
    if item == 0 {
        return;
    }
    out.par_chunks_mut(item).zip(lse.par_chunks_mut(n)).enumerate().for_each_init(
        || vec![T::zero(); n * n],
        |p, (b, (out, lse))| {
            let r = b * item..(b + 1) * item;
            weights_one(&q[r.clone()], &k[r.clone()], d, p, lse);
            // out = v p^T: out[c, i] = sum_j v[c, j] p[i, j].
            let (vb, pt) = (MatRef::row_major(&v[r], d.c, n), MatRef::row_major_t(p, n, n));
            matmul(vb, pt, out, false, Threads::Serial);
        },
    );
}

/// The softmax weights alone, `p` [b, n, n].
pub fn attention_weights<T: Element>(q: &[T], k: &[T], d: AttentionDims, p: &mut [T]) {
    let (item, n) = (d.item(), d.n);
    if item == 0 {
        return;
    }
    p.par_chunks_mut(n * n).enumerate().for_each_init(
        || vec![T::zero(); n],
        |lse, (b, p)| {
            let r = b * item..(b + 1) * item;
            weights_one(&q[r.clone()], &k[r], d, p, lse);
        },
    );
}

/// Scratch buffers of one backward item.
struct Scratch<T> {
    p: Vec<T>,
    dp: Vec<T>,
    rowdot: Vec<f64>,
}

/// One item's inputs to the backward pass.
struct Item<'a, T> {
    dout: &'a [T],
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    out: &'a [T],
    lse: &'a [T],
}

/// `p_ij = exp(scale * s_ij - lse_i)`: the forward weights, recomputed.
fn recompute_weights<T: Element>(it: &Item<'_, T>, d: AttentionDims, p: &mut [T]) {
    raw_scores(it.q, it.k, d.c, d.n, p);
    let scale = d.scale::<T>();
    for (row, &l) in p.chunks_exact_mut(d.n).zip(it.lse) {
        exp_shifted(row, scale, l);
    }
}

/// `rowdot_i = sum_c dout[c, i] out[c, i]` (= sum_j p_ij dp_ij).
fn row_dots<T: Element>(dout: &[T], out: &[T], n: usize, rowdot: &mut [f64]) {
    rowdot.iter_mut().for_each(|r| *r = 0.0);
    for (dc, oc) in dout.chunks_exact(n).zip(out.chunks_exact(n)) {
        for ((r, &g), &o) in rowdot.iter_mut().zip(dc).zip(oc) {
            *r += g.to_f64() * o.to_f64();
        }
    }
}

/// Backward of one item into `dq`, `dk`, `dv` (each [c, n]).
fn backward_one<T: Element>(
    it: &Item<'_, T>,
    d: AttentionDims,
    sc: &mut Scratch<T>,
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let (c, n) = (d.c, d.n);
    recompute_weights(it, d, &mut sc.p);
    // out = v p^T  =>  dv = dout p,  dp = dout^T v.
    matmul(MatRef::row_major(it.dout, c, n), MatRef::row_major(&sc.p, n, n), dv, false, Threads::Serial);
    matmul(MatRef::row_major_t(it.dout, c, n), MatRef::row_major(it.v, c, n), &mut sc.dp, false, Threads::Serial);
    // Softmax backward, with the score scale folded in: ds = scale * p * (dp - rowdot).
    row_dots(it.dout, it.out, n, &mut sc.rowdot);
    let scale = d.scale::<T>();
    for ((dsr, pr), &rd) in sc.dp.chunks_exact_mut(n).zip(sc.p.chunks_exact(n)).zip(&sc.rowdot) {
        let rd = T::from_f64(rd);
        for (ds, &p) in dsr.iter_mut().zip(pr) {
            *ds = scale * p * (*ds - rd);
        }
    }
    // s = q^T k  =>  dq = k ds^T,  dk = q ds.
    let ds = &sc.dp;
    matmul(MatRef::row_major(it.k, c, n), MatRef::row_major_t(ds, n, n), dq, false, Threads::Serial);
    matmul(MatRef::row_major(it.q, c, n), MatRef::row_major(ds, n, n), dk, false, Threads::Serial);
}

/// Backward: `dq`, `dk`, `dv` [b, c, n] from `dout` and the forward's `out`, `lse`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Element>(
    dout: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    out: &[T],
    lse: &[T],
    d: AttentionDims,
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let (item, n) = (d.item(), d.n);
    if item == 0 {
        return;
    }
    let grads = dq.par_chunks_mut(item).zip(dk.par_chunks_mut(item)).zip(dv.par_chunks_mut(item));
    grads.enumerate().for_each_init(
        || Scratch { p: vec![T::zero(); n * n], dp: vec![T::zero(); n * n], rowdot: vec![0f64; n] },
        |sc, (b, ((dq, dk), dv))| {
            let r = b * item..(b + 1) * item;
            let it = Item {
                dout: &dout[r.clone()],
                q: &q[r.clone()],
                k: &k[r.clone()],
                v: &v[r.clone()],
                out: &out[r],
                lse: &lse[b * n..(b + 1) * n],
            };
            backward_one(&it, d, sc, dq, dk, dv);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::{exp_f32, exp_f64};

    /// Largest relative error of `f` against std's exp over [lo, hi].
    fn max_rel_err(lo: f64, hi: f64, f: impl Fn(f64) -> f64) -> f64 {
        (0..=200_000)
            .map(|i| lo + (hi - lo) * i as f64 / 200_000.0)
            .map(|x| ((f(x) - x.exp()) / x.exp()).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn exp_kernels_match_std() {
        assert!(max_rel_err(-708.0, 709.0, exp_f64) < 1e-15);
        // f32 inputs are rounded first: compare at the rounded point.
        assert!(max_rel_err(-87.0, 88.0, |x| exp_f32(x as f32) as f64 * (x - x as f32 as f64).exp()) < 5e-7);
        assert_eq!(exp_f64(-1e4), exp_f64(-708.0));
        assert!(exp_f64(f64::NAN).is_nan() && exp_f32(f32::NAN).is_nan());
        assert_eq!((exp_f64(0.0), exp_f32(0.0)), (1.0, 1.0));
    }
}
