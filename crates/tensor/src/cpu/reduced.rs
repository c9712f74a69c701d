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

use crate::geom::{ConvGeom, LinearDims};
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
