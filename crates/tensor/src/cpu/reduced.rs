//! The CPU oracle of the reduced-precision (tensor-core) GEMMs: each input
//! is rounded as the tensor core sees it (`Precision::round`: bf16 or tf32;
//! identity for fp32), the products are summed in f64, and with every output
//! comes the sum of the magnitudes of its products, sum |a~ b~|, which the
//! error bounds scale with. Plain loops over the definitions (not im2col),
//! parallel over outputs; each output's sum is in a fixed order.
//!
//! Bounds (derived in `tests/tensor_core.rs`): a device that rounds its
//! inputs the same way and accumulates in f32 is within
//! `accumulation_bound(additions, abs_sum)` of `value`, where `additions`
//! is the number of f32 additions on the longest path of an output's sum.

use crate::geom::{AttentionDims, ConvGeom, LinearDims};
use crate::Precision;
use rayon::prelude::*;

/// Outputs of an oracle GEMM: the f64 sums of the rounded products (plus
/// bias) and, per output, the sum of the absolute values of those terms.
#[derive(Clone, Debug)]
pub struct Rounded {
    pub value: Vec<f64>,
    pub abs_sum: Vec<f64>,
}

/// gamma_n(u) = n u / (1 - n u): the relative error bound of n roundings
/// with unit roundoff u (Higham, Accuracy and Stability, Lemma 3.1);
/// infinite (no bound) once n u >= 1.
pub fn gamma(n: usize, u: f64) -> f64 {
    let nu = n as f64 * u;
    if nu >= 1.0 {
        return f64::INFINITY;
    }
    nu / (1.0 - nu)
}

/// The f32 accumulation bound of one output: gamma_n(2^-23) sum |terms|, n
/// the additions on the path. 2^-23 rather than f32's 2^-24 covers tensor
/// cores that truncate their sums instead of rounding to nearest.
pub fn accumulation_bound(additions: usize, abs_sum: f64) -> f64 {
    gamma(additions, 2f64.powi(-23)) * abs_sum
}

fn rounded(p: Precision, v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| p.round(x) as f64).collect()
}

/// Fills `len` outputs, each from `term_sum(i) -> (sum, sum of |terms|)`.
fn outputs(len: usize, term_sum: impl Fn(usize) -> (f64, f64) + Sync + Send) -> Rounded {
    let pairs: Vec<(f64, f64)> = (0..len).into_par_iter().map(term_sum).collect();
    let (value, abs_sum) = pairs.into_iter().unzip();
    Rounded { value, abs_sum }
}

/// y[n, o, oy, ox] = b[o] + sum_{c, ky, kx} w~[o, c, ky, kx] x~[n, c, iy, ix]
/// (the bias is added unrounded: it does not go through the tensor core).
pub fn conv2d_forward(p: Precision, g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Rounded {
    let (xr, wr) = (rounded(p, x), rounded(p, w));
    outputs(g.n * g.co * g.ho * g.wo, |i| {
        let (ox, oy) = (i % g.wo, (i / g.wo) % g.ho);
        let (o, img) = ((i / (g.wo * g.ho)) % g.co, i / (g.wo * g.ho * g.co));
        let b = bias.map_or(0.0, |b| b[o] as f64);
        let (mut s, mut a) = (b, b.abs());
        for c in 0..g.ci {
            for ky in 0..g.kh {
                let iy = (oy * g.stride + ky) as isize - g.pad_top as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                for kx in 0..g.kw {
                    let ix = (ox * g.stride + kx) as isize - g.pad_left as isize;
                    if ix < 0 || ix >= g.w as isize {
                        continue;
                    }
                    let t = wr[((o * g.ci + c) * g.kh + ky) * g.kw + kx]
                        * xr[((img * g.ci + c) * g.h + iy as usize) * g.w + ix as usize];
                    s += t;
                    a += t.abs();
                }
            }
        }
        (s, a)
    })
}

/// dx[n, c, iy, ix] = sum over (o, ky, kx) with oy s - pt + ky = iy and
/// ox s - pl + kx = ix of w~[o, c, ky, kx] dy~[n, o, oy, ox].
pub fn conv2d_backward_data(p: Precision, g: &ConvGeom, dy: &[f32], w: &[f32]) -> Rounded {
    let (dyr, wr) = (rounded(p, dy), rounded(p, w));
    outputs(g.n * g.ci * g.h * g.w, |i| {
        let (ix, iy) = (i % g.w, (i / g.w) % g.h);
        let (c, img) = ((i / (g.w * g.h)) % g.ci, i / (g.w * g.h * g.ci));
        let (mut s, mut a) = (0.0, 0.0);
        for o in 0..g.co {
            for ky in 0..g.kh {
                let yy = (iy + g.pad_top) as isize - ky as isize;
                if yy < 0 || !(yy as usize).is_multiple_of(g.stride) || yy as usize / g.stride >= g.ho {
                    continue;
                }
                let oy = yy as usize / g.stride;
                for kx in 0..g.kw {
                    let xx = (ix + g.pad_left) as isize - kx as isize;
                    if xx < 0 || !(xx as usize).is_multiple_of(g.stride) || xx as usize / g.stride >= g.wo {
                        continue;
                    }
                    let ox = xx as usize / g.stride;
                    let t =
                        wr[((o * g.ci + c) * g.kh + ky) * g.kw + kx] * dyr[((img * g.co + o) * g.ho + oy) * g.wo + ox];
                    s += t;
                    a += t.abs();
                }
            }
        }
        (s, a)
    })
}

/// dw[o, c, ky, kx] = sum_{n, oy, ox} dy~[n, o, oy, ox] x~[n, c, iy, ix].
pub fn conv2d_backward_weight(p: Precision, g: &ConvGeom, dy: &[f32], x: &[f32]) -> Rounded {
    let (dyr, xr) = (rounded(p, dy), rounded(p, x));
    outputs(g.co * g.ci * g.kh * g.kw, |i| {
        let (kx, ky) = (i % g.kw, (i / g.kw) % g.kh);
        let (c, o) = ((i / (g.kw * g.kh)) % g.ci, i / (g.kw * g.kh * g.ci));
        let (mut s, mut a) = (0.0, 0.0);
        for img in 0..g.n {
            for oy in 0..g.ho {
                let iy = (oy * g.stride + ky) as isize - g.pad_top as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                for ox in 0..g.wo {
                    let ix = (ox * g.stride + kx) as isize - g.pad_left as isize;
                    if ix < 0 || ix >= g.w as isize {
                        continue;
                    }
                    let t = dyr[((img * g.co + o) * g.ho + oy) * g.wo + ox]
                        * xr[((img * g.ci + c) * g.h + iy as usize) * g.w + ix as usize];
                    s += t;
                    a += t.abs();
                }
            }
        }
        (s, a)
    })
}

/// y[i, o] = b[o] + sum_k x~[i, k] w~[o, k] (x [n, d_in], w [d_out, d_in]).
pub fn linear_forward(p: Precision, d: LinearDims, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Rounded {
    let (xr, wr) = (rounded(p, x), rounded(p, w));
    outputs(d.n * d.d_out, |i| {
        let (row, o) = (i / d.d_out, i % d.d_out);
        let b = bias.map_or(0.0, |b| b[o] as f64);
        let (mut s, mut a) = (b, b.abs());
        for k in 0..d.d_in {
            let t = xr[row * d.d_in + k] * wr[o * d.d_in + k];
            s += t;
            a += t.abs();
        }
        (s, a)
    })
}

/// dx[i, k] = sum_o dy~[i, o] w~[o, k].
pub fn linear_backward_data(p: Precision, d: LinearDims, dy: &[f32], w: &[f32]) -> Rounded {
    let (dyr, wr) = (rounded(p, dy), rounded(p, w));
    outputs(d.n * d.d_in, |i| {
        let (row, k) = (i / d.d_in, i % d.d_in);
        let (mut s, mut a) = (0.0, 0.0);
        for o in 0..d.d_out {
            let t = dyr[row * d.d_out + o] * wr[o * d.d_in + k];
            s += t;
            a += t.abs();
        }
        (s, a)
    })
}

/// dw[o, k] = sum_i dy~[i, o] x~[i, k].
pub fn linear_backward_weight(p: Precision, d: LinearDims, dy: &[f32], x: &[f32]) -> Rounded {
    let (dyr, xr) = (rounded(p, dy), rounded(p, x));
    outputs(d.d_out * d.d_in, |i| {
        let (o, k) = (i / d.d_in, i % d.d_in);
        let (mut s, mut a) = (0.0, 0.0);
        for row in 0..d.n {
            let t = dyr[row * d.d_out + o] * xr[row * d.d_in + k];
            s += t;
            a += t.abs();
        }
        (s, a)
    })
}

// ---- attention (kernels/attention_tc.cu)
//
// Besides q, k, v and dout, the tensor-core attention rounds operands it
// computes itself in f32: the softmax weights p and the score gradients ds.
// The oracle computes them in f64 from the rounded inputs and cannot know
// the kernel's f32 values exactly, only an interval around its own: the
// kernel's p lies within a relative distance E of the oracle's (E from the
// score sums' f32 accumulation, the lse, exp and the roundings as written),
// its ds within an absolute distance. Rounding is monotonic, so the
// kernel's rounded operand lies between the roundings of the interval's
// ends; where those differ (a rounding boundary inside the interval, rare:
// E is ~1e-6 against a bf16 / tf32 spacing of 2^-8 / 2^-11), the output may
// move by that width times the other operand. `slack` sums those moves.

/// f32's unit roundoff.
const U32: f64 = 1.0 / 16_777_216.0;
/// The f32 accumulation unit of `accumulation_bound` (truncating adders).
const U_ACC: f64 = 2.0 * U32;
/// Relative error of the device's expf / logf (CUDA: at most 2 ulp).
const EXP_REL: f64 = 4.0 * U32;
/// Smallest normal f32: below it relative error bounds do not hold.
const TINY: f64 = 1.175_494_350_822_287_5e-38;

/// An oracle output of a product whose operands include values the kernel
/// computes itself: the f64 sum of the oracle's rounded operands, the sum of
/// their magnitudes, `slack`, the most that rounding the kernel's own
/// operands to the other side of a boundary may move the kernel's output,
/// and `acc_err`, the bound of the kernel's f32 accumulation: the smaller of
/// the bound in its order of mma steps (`wmma_dot`, far below the other for
/// long sums that cancel) and `accumulation_bound(n, abs_sum + slack)`.
#[derive(Clone, Debug)]
pub struct Bounded {
    pub value: Vec<f64>,
    pub abs_sum: Vec<f64>,
    pub slack: Vec<f64>,
    pub acc_err: Vec<f64>,
}

impl Bounded {
    /// How far the kernel's output `i` may be from `value[i]`:
    /// `acc_err[i] + slack[i]`.
    pub fn bound(&self, i: usize) -> f64 {
        self.acc_err[i] + self.slack[i]
    }
}

/// The attention forward oracle: out [b, c, n] and lse [b, n] with the most
/// the kernel's f32 lse may differ from it.
#[derive(Clone, Debug)]
pub struct AttentionForward {
    pub out: Bounded,
    pub lse: Vec<f64>,
    pub lse_err: Vec<f64>,
}

/// The attention backward oracle: dq, dk, dv [b, c, n].
#[derive(Clone, Debug)]
pub struct AttentionBackward {
    pub dq: Bounded,
    pub dk: Bounded,
    pub dv: Bounded,
}

/// The score scale C^-0.5 as the kernels get it (rounded to f32).
fn attention_scale(c: usize) -> f64 {
    (c as f64).sqrt().recip() as f32 as f64
}

/// An operand the kernel computes itself: (the oracle's rounded value, the
/// width of the interval the kernel's rounded value lies in).
type Operand = (f64, f64);

/// The [`Operand`] for the exact value `x` and the interval `lo..=hi` that
/// holds the kernel's f32 value. fp32 rounds nothing: the operand is `x`.
fn kernel_operand(p: Precision, x: f64, lo: f64, hi: f64) -> Operand {
    match p {
        Precision::Fp32 => (x, hi - lo),
        _ => {
            let r = |y: f64| p.round(y as f32) as f64;
            (r(x), r(hi) - r(lo))
        }
    }
}

/// The k step of one mma at precision `p` (bf16 m16n16k16, tf32 m16n16k8).
fn mma_k(p: Precision) -> usize {
    if p == Precision::Tf32 {
        8
    } else {
        16
    }
}

/// sum_c a[c] b[c] in f64 and the most an f32 wmma accumulation over k
/// steps of `ks` may differ from it. Each mma adds `ks` exact products to
/// the accumulator in some order with at most `ks` roundings, an error of at
/// most gamma_ks(u') (|acc| + sum |block products|) (Higham eq. 4.4 for the
/// ks + 1 summands, whatever their order), where |acc| <= |exact partial
/// sum| + the error so far. Far tighter than gamma_c(u') sum |products| for
/// sums that cancel, as scores do.
fn wmma_dot(c: usize, ks: usize, a: impl Fn(usize) -> f64, b: impl Fn(usize) -> f64) -> (f64, f64) {
    let g = gamma(ks, U_ACC);
    let (mut s, mut e) = (0.0f64, 0.0f64);
    for c0 in (0..c).step_by(ks) {
        let (mut bs, mut ba) = (0.0, 0.0);
        for cc in c0..(c0 + ks).min(c) {
            let t = a(cc) * b(cc);
            bs += t;
            ba += t.abs();
        }
        e += g * (s.abs() + e + ba);
        s += bs;
    }
    (s, e)
}

/// One item's scaled scores x[i][j] = scale sum_c q~[c,i] k~[c,j] and the
/// most the kernel's f32 value may differ: its wmma sum over the channels
/// (`wmma_dot`), then the rounding of the product with the scale.
fn scaled_scores(p: Precision, c: usize, n: usize, sc: f64, q: &[f64], k: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let ks = mma_k(p);
    let rows: Vec<(Vec<f64>, Vec<f64>)> = (0..n)
        .into_par_iter()
        .map(|i| {
            (0..n)
                .map(|j| {
                    let (s, e) = wmma_dot(c, ks, |cc| q[cc * n + i], |cc| k[cc * n + j]);
                    let (x, ds) = (sc * s, sc * e);
                    (x, ds + U32 * (x.abs() + ds))
                })
                .unzip()
        })
        .collect();
    let (x, dx): (Vec<Vec<f64>>, Vec<Vec<f64>>) = rows.into_iter().unzip();
    (x.concat(), dx.concat())
}

/// [c][a] outputs sum_b w(a, b) y[c][b] of one item (`w` the rounded
/// operand and its interval width), summed over b in order in mma steps of
/// `ks` as the kernels do, with sum |terms|, the slack and the
/// accumulation bound of `wmma_dot` (its partial sums widened by the slack
/// so far, which the kernel's operands may add).
fn weighted_sums(c: usize, n: usize, ks: usize, w: &[Operand], y: &[f64], transpose: bool) -> Bounded {
    let at = |a: usize, b: usize| if transpose { w[b * n + a] } else { w[a * n + b] };
    let g = gamma(ks, U_ACC);
    let cells: Vec<[f64; 4]> = (0..c * n)
        .into_par_iter()
        .map(|e| {
            let (cc, a) = (e / n, e % n);
            let (mut s, mut abs, mut slack, mut err) = (0.0f64, 0.0, 0.0, 0.0);
            for b0 in (0..n).step_by(ks) {
                let (mut bs, mut ba, mut bsl) = (0.0, 0.0, 0.0);
                for b in b0..(b0 + ks).min(n) {
                    let ((wv, width), yv) = (at(a, b), y[cc * n + b]);
                    bs += wv * yv;
                    ba += (wv * yv).abs();
                    bsl += width * yv.abs();
                }
                err += g * (s.abs() + slack + err + ba + bsl);
                s += bs;
                abs += ba;
                slack += bsl;
            }
            // the plain recursive-summation bound holds too (each term passes
            // at most n additions) and is the smaller one for short sums
            [s, abs, slack, err.min(accumulation_bound(n, abs + slack))]
        })
        .collect();
    let mut out = empty_bounded();
    for [s, a, sl, e] in cells {
        out.value.push(s);
        out.abs_sum.push(a);
        out.slack.push(sl);
        out.acc_err.push(e);
    }
    out
}

fn append(dst: &mut Bounded, src: Bounded) {
    dst.value.extend(src.value);
    dst.abs_sum.extend(src.abs_sum);
    dst.slack.extend(src.slack);
    dst.acc_err.extend(src.acc_err);
}

fn empty_bounded() -> Bounded {
    Bounded { value: vec![], abs_sum: vec![], slack: vec![], acc_err: vec![] }
}

/// Attention forward as attention_tc.cu computes it: s = q~^T k~ (f64 sum),
/// lse per query, p = exp(scale s - lse) rounded, out = sum_j p~_ij v~[c,j].
/// q, k, v are [b, c, n].
pub fn attention_forward(p: Precision, d: AttentionDims, q: &[f32], k: &[f32], v: &[f32]) -> AttentionForward {
    let (c, n) = (d.c, d.n);
    let (qr, kr, vr) = (rounded(p, q), rounded(p, k), rounded(p, v));
    let sc = attention_scale(c);
    // f32 roundings on each weight's path through the online softmax (tile
    // sums, rescales, warp sums) and the expf calls it passes
    let tiles = n.div_ceil(32);
    let mut f = AttentionForward { out: empty_bounded(), lse: vec![], lse_err: vec![] };
    for item in 0..d.b {
        let r = item * c * n..(item + 1) * c * n;
        let (x, dx) = scaled_scores(p, c, n, sc, &qr[r.clone()], &kr[r.clone()]);
        let mut w: Vec<Operand> = vec![(0.0, 0.0); n * n];
        for i in 0..n {
            let (xs, dxs) = (&x[i * n..(i + 1) * n], &dx[i * n..(i + 1) * n]);
            let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let dmax = dxs.iter().copied().fold(0.0, f64::max);
            let range = xs.iter().map(|&s| m - s).fold(0.0, f64::max) + 2.0 * dmax;
            let l: f64 = xs.iter().map(|&s| (s - m).exp()).sum();
            let lse = m + l.ln();
            let rel_l = 1.01 * (gamma(2 * tiles + 4, U32) + tiles as f64 * EXP_REL + 2.0 * U32 * range);
            let lse_err = dmax + 1.01 * rel_l + EXP_REL * l.ln().abs() + U32 * (lse.abs() + dmax) + TINY;
            for j in 0..n {
                let po = (xs[j] - lse).exp();
                let e = 1.01 * (dxs[j] + lse_err + U32 * ((xs[j] - lse).abs() + dxs[j] + lse_err) + EXP_REL);
                w[i * n + j] = kernel_operand(p, po, (po * (-e).exp() - TINY).max(0.0), po * e.exp() + TINY);
            }
            f.lse.push(lse);
            f.lse_err.push(lse_err);
        }
        append(&mut f.out, weighted_sums(c, n, mma_k(p), &w, &vr[r], false));
    }
    f
}

/// Attention backward as attention_tc.cu computes it, given the forward's
/// `out` and (f32) `lse`: p = exp(scale s - lse), dp = dout~^T v~,
/// D = rowsum(dout * out) (unrounded, f64), ds = scale p (dp - D), p and ds
/// rounded; dv = sum_i p~ dout~, dk = sum_i ds~ q~, dq = sum_j ds~ k~.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    p: Precision,
    d: AttentionDims,
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
) -> AttentionBackward {
    let (c, n) = (d.c, d.n);
    let (qr, kr, vr, dor) = (rounded(p, q), rounded(p, k), rounded(p, v), rounded(p, dout));
    let sc = attention_scale(c);
    let ks = mma_k(p);
    let mut b = AttentionBackward { dq: empty_bounded(), dk: empty_bounded(), dv: empty_bounded() };
    for item in 0..d.b {
        let r = item * c * n..(item + 1) * c * n;
        let (x, dx) = scaled_scores(p, c, n, sc, &qr[r.clone()], &kr[r.clone()]);
        // dp as scores of dout and v (unscaled: sc = 1 and no product rounding)
        let (dor_i, vr_i) = (&dor[r.clone()], &vr[r.clone()]);
        let terms: Vec<(Operand, Operand)> = (0..n * n)
            .into_par_iter()
            .map(|e| {
                let (i, j) = (e / n, e % n);
                let (dp, dp_err) = wmma_dot(c, ks, |cc| dor_i[cc * n + i], |cc| vr_i[cc * n + j]);
                let (mut dd, mut dabs) = (0.0, 0.0);
                for cc in 0..c {
                    let t = dout[r.start + cc * n + i] as f64 * out[r.start + cc * n + i] as f64;
                    dd += t;
                    dabs += t.abs();
                }
                let l = lse[item * n + i] as f64;
                let po = (x[e] - l).exp();
                let ep = 1.01 * (dx[e] + U32 * ((x[e] - l).abs() + dx[e]) + EXP_REL);
                let d_err = U32 * dd.abs() + 2.0 * c as f64 * f64::EPSILON * dabs;
                let t = dp - dd;
                let dt = dp_err + d_err + U32 * (t.abs() + dp_err + d_err);
                let dpo = (ep.exp() - 1.0) * po + TINY;
                let ds = sc * po * t;
                let dds = 1.01
                    * (sc * dpo * (t.abs() + dt) + sc * po * dt + 2.01 * U32 * sc * (po + dpo) * (t.abs() + dt))
                    + TINY;
                (
                    kernel_operand(p, po, (po * (-ep).exp() - TINY).max(0.0), po * ep.exp() + TINY),
                    kernel_operand(p, ds, ds - dds, ds + dds),
                )
            })
            .collect();
        let (wp, wds): (Vec<Operand>, Vec<Operand>) = terms.into_iter().unzip();
        append(&mut b.dv, weighted_sums(c, n, ks, &wp, dor_i, true));
        append(&mut b.dk, weighted_sums(c, n, ks, &wds, &qr[r.clone()], true));
        append(&mut b.dq, weighted_sums(c, n, ks, &wds, &kr[r], false));
    }
    b
}
