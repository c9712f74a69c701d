//! Winograd F(4, 3) down the columns for the f32 3x3 stride-1 convolutions
//! with 16 or more channels each way that the 2-D F(4x4, 3x3) of
//! `winograd_2d.rs` does not take (below 128 channels either way, or below
//! 384 both together, as 128 -> 128): the forward (and so the stride-1 data
//! gradient) and the weight gradient. At
//! the MNIST model's 32-64 channels the 2-D transform's inner dimension (Ci)
//! is too short to pay, and this one keeps 3 Ci.
//!
//! Each column of outputs is cut into tiles of 4 rows; a tile's 4 outputs
//! through one kernel column are `A^T [(G g) ⊙ (B^T d)]` for the kernel
//! column's 3 taps `g` and the 6 input rows `d` over the tile: 6 multiplies
//! instead of 12. The kernel columns (the horizontal taps) stay a sum, which
//! is the gemm's inner dimension together with the input channels, as in the
//! direct path's im2col but 3 taps long instead of 9:
//!
//! - forward:         `M_ξ [Co x N] = U_ξ [Co x 3Ci] * V_ξ [3Ci x N]` with
//!   `U_ξ[o][(c, kx)] = (G w[o][c][:][kx])[ξ]` and `V_ξ[(c, kx)][(img, ty,
//!   ox)] = (B^T d)[ξ]` for the padded input rows `4 ty .. 4 ty + 6` of
//!   channel `c` at column `ox + kx`; output rows `4 ty .. 4 ty + 4` are
//!   `A^T M[.., (img, ty, ox)]`, cut to `Ho`;
//! - backward data:   the parent's stride-1 path is the forward conv of dy with
//!   the flipped, transposed kernel, so it comes here too;
//! - backward weight: differentiating the forward, `dU_ξ^T [3Ci x Co] = sum
//!   over groups of V_ξ * D_ξ^T [N x Co]` with `D = A dY` per output tile
//!   (zero past the output's last row), then `dW = G^T dU`.
//!
//! Per output, 3 Ci x 6/4 multiplies instead of 9 Ci: 2x fewer, with a 3
//! Ci-long inner dimension. Every transform runs along rows of the NCHW
//! planes, so nothing is transposed: the rows of `V` for the 3 horizontal
//! taps are the transformed padded rows shifted by 0, 1 and 2 columns.
//!
//! `B^T` has integer coefficients (up to 5), `A^T` powers of two up to 8 and
//! `G` sixths and 24ths (applied in f64 and rounded once): more rounding
//! than the direct path, held by `crates/tensor/tests/conv2d.rs` to the same
//! f64 oracles and bounds. f64 stays on the direct path.
//!
//! Work is split by image groups of about `TARGET_COLUMNS` gemm columns (the
//! shape decides, never the thread count), and the weight gradient sums
//! per-slot partials in slot order, so results are bit-identical for any
//! thread count.

use super::super::gemm::{matmul, MatRef, Threads};
use super::super::simd::widest;
use super::blocks::{copy_run, is_f32_3x3_stride_1, load};
use super::f43::{a6, at4, bt6};
use super::{
    by_channel, images_per_group, plane_sums, sum_partials, weight_slots, with_partials, with_scratch, zero_few,
    Epilogue,
};
use crate::geom::ConvGeom;
use crate::Element;
use rayon::prelude::*;
use std::ops::Range;

/// Gemm columns (output positions) one group sees. Measured on Zen 4 at
/// 64, 128, 196, 392 and 784 (the conv benches' shapes, one-off runs): 64 is
/// fastest or level everywhere, mostly from keeping both cores busy through
/// the small layers (the gemm's rate drops only ~6% from 1,024 columns to 64).
const TARGET_COLUMNS: usize = 64;

/// Most partial weight gradients (18 Co Ci values each) alive at once: a
/// fixed number, never the thread count, so the summation order is the same
/// everywhere.
const WEIGHT_SLOTS: usize = 8;

/// Fewest input and output channels: below this the gemm's dimensions are too
/// thin for the transforms to pay (the first and last convs, 1-3 channels).
const MIN_CHANNELS: usize = 16;

/// Transformed points per tile (`F(4, 3)`: 4 outputs + 3 taps - 1).
const XI: usize = 6;

/// Whether a conv runs here (forward, stride-1 data gradient and weight
/// gradient alike).
pub(super) fn applies<T: Element>(g: &ConvGeom) -> bool {
    is_f32_3x3_stride_1::<T>(g) && g.ci >= MIN_CHANNELS && g.co >= MIN_CHANNELS
}

/// The tiling of one image: `ty` tiles of 4 output rows; the padded input
/// plane is `4 ty + 2` rows of `pw = Wo + 2` (that is `W + pad_left +
/// pad_right`) columns.
#[derive(Clone, Copy)]
struct Tiles {
    ty: usize,
    pw: usize,
}

impl Tiles {
    fn of(g: &ConvGeom) -> Self {
        Tiles { ty: g.ho.div_ceil(4), pw: g.wo + 2 }
    }

    fn padded_rows(&self) -> usize {
        4 * self.ty + 2
    }

    /// Gemm columns of one image: `(ty, ox)`.
    fn columns(&self, g: &ConvGeom) -> usize {
        self.ty * g.wo
    }

    fn images_per_group(&self, g: &ConvGeom) -> usize {
        images_per_group(g.n, self.columns(g), TARGET_COLUMNS)
    }
}

// ------------------------------------------------------------ transforms

/// `G` of F(4, 3) (Lavin & Gray 2016): `U = G g` for a kernel column `g`.
const G: [[f64; 3]; XI] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `U_ξ[o][(c, kx)] = (G w[o][c][:][kx])[ξ]`, as `[ξ][co][3 ci]`, in f64
/// rounded once.
fn transform_kernels<T: Element>(g: &ConvGeom, w: &[T]) -> Vec<T> {
    let (co, ci) = (g.co, g.ci);
    let mut u = vec![T::zero(); XI * co * 3 * ci];
    for o in 0..co {
        for c in 0..ci {
            let k = &w[(o * ci + c) * 9..][..9];
            for kx in 0..3 {
                for (xi, row) in G.iter().enumerate() {
                    let v: f64 = (0..3).map(|ky| row[ky] * k[ky * 3 + kx].to_f64()).sum();
                    u[(xi * co + o) * 3 * ci + c * 3 + kx] = T::from_f64(v);
                }
            }
        }
    }
    u
}

/// `dW[o][c][:][kx] = G^T dU[.., o, (c, kx)]` (`dU` as `[ξ][3 ci][co]`): the
/// adjoint of `transform_kernels`.
fn untransform_kernels<T: Element>(g: &ConvGeom, du: &[T], dw: &mut [T]) {
    let (co, ci) = (g.co, g.ci);
    for o in 0..co {
        for c in 0..ci {
            let k = &mut dw[(o * ci + c) * 9..][..9];
            for kx in 0..3 {
                for ky in 0..3 {
                    let v: f64 = (0..XI).map(|xi| G[xi][ky] * du[(xi * 3 * ci + c * 3 + kx) * co + o].to_f64()).sum();
                    k[ky * 3 + kx] = T::from_f64(v);
                }
            }
        }
    }
}

/// One channel's plane zero-padded: `4 ty + 2` rows of `pw`,
/// `p[py][px] = x[py - pad_top][px - pad_left]`.
#[inline(always)]
fn pad_plane<T: Element>(g: &ConvGeom, tiles: Tiles, src: &[T], p: &mut [T]) {
    let pw = tiles.pw;
    for (py, row) in p[..tiles.padded_rows() * pw].chunks_exact_mut(pw).enumerate() {
        let iy = py as isize - g.pad_top as isize;
        if iy < 0 || iy >= g.h as isize || g.w == 0 {
            row.fill(T::zero());
            continue;
        }
        zero_few(&mut row[..g.pad_left]);
        zero_few(&mut row[g.pad_left + g.w..]);
        copy_run(&mut row[g.pad_left..][..g.w], &src[iy as usize * g.w..][..g.w]);
    }
}

/// `V_ξ[(c, kx)][(img, ty, ox)] = (B^T d)[ξ]` for the `nb` images of `x`,
/// `d` the padded rows `4 ty .. 4 ty + 6` at column `ox + kx`; `v` as
/// `[ξ][3 ci][n]`, `n` columns:
///
/// `B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
///         0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]`.
#[inline(always)]
fn transform_inputs<T: Element>(g: &ConvGeom, tiles: Tiles, x: &[T], nb: usize, n: usize, v: &mut [T], buf: &mut [T]) {
    let (pw, plane) = (tiles.pw, g.h * g.w);
    let (p, t) = buf.split_at_mut(tiles.padded_rows() * pw);
    let t = &mut t[..XI * pw];
    let vl = 3 * g.ci * n;
    for img in 0..nb {
        for c in 0..g.ci {
            pad_plane(g, tiles, &x[(img * g.ci + c) * plane..][..plane], p);
            for ty in 0..tiles.ty {
                let d = &p[4 * ty * pw..][..6 * pw];
                let (d0, d1, d2) = (&d[..pw], &d[pw..2 * pw], &d[2 * pw..3 * pw]);
                let (d3, d4, d5) = (&d[3 * pw..4 * pw], &d[4 * pw..5 * pw], &d[5 * pw..]);
                for_blocks!(pw, |at, W| {
                    let (d0, d1, d2) = (load::<T, W>(d0, at), load::<T, W>(d1, at), load::<T, W>(d2, at));
                    let (d3, d4, d5) = (load::<T, W>(d3, at), load::<T, W>(d4, at), load::<T, W>(d5, at));
                    let out = bt6(&[d0, d1, d2, d3, d4, d5]);
                    for (row, o) in t.chunks_exact_mut(pw).zip(&out) {
                        row[at..at + W].copy_from_slice(o);
                    }
                });
                let col = (img * tiles.ty + ty) * g.wo;
                for (xi, tx) in t.chunks_exact(pw).enumerate() {
                    for kx in 0..3 {
                        let row = xi * vl + (c * 3 + kx) * n + col;
                        copy_run(&mut v[row..][..g.wo], &tx[kx..]);
                    }
                }
            }
        }
    }
}

/// `y[img][o][4 ty + j][ox] = (A^T M[.., o, (img, ty, ox)])[j]` cut to `Ho`
/// rows, `m` as `[ξ][co][n]`:
/// `A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]`.
#[inline(always)]
fn transform_outputs<T: Element>(g: &ConvGeom, tiles: Tiles, m: &[T], nb: usize, n: usize, y: &mut [T]) {
    let (wo, ml) = (g.wo, g.co * n);
    for img in 0..nb {
        for o in 0..g.co {
            let out = &mut y[(img * g.co + o) * g.p()..][..g.p()];
            for ty in 0..tiles.ty {
                let col = o * n + (img * tiles.ty + ty) * wo;
                let mx = |xi: usize| &m[xi * ml + col..][..wo];
                let (m0, m1, m2, m3, m4, m5) = (mx(0), mx(1), mx(2), mx(3), mx(4), mx(5));
                let live = (g.ho - 4 * ty).min(4);
                let block = &mut out[4 * ty * wo..][..live * wo];
                for_blocks!(wo, |at, W| {
                    let (m0, m1, m2) = (load::<T, W>(m0, at), load::<T, W>(m1, at), load::<T, W>(m2, at));
                    let (m3, m4, m5) = (load::<T, W>(m3, at), load::<T, W>(m4, at), load::<T, W>(m5, at));
                    let rows = at4(&[m0, m1, m2, m3, m4, m5]);
                    // (The last tile of a height that is not a multiple of 4 keeps `live` rows.)
                    for (dst, r) in block.chunks_exact_mut(wo).zip(&rows) {
                        dst[at..at + W].copy_from_slice(r);
                    }
                });
            }
        }
    }
}

/// `D_ξ[o][(img, ty, ox)] = (A e)[ξ]`, `e` the output gradients of rows
/// `4 ty .. 4 ty + 4` at column `ox` (zero past the last row); `d` as
/// `[ξ][co][n]`:
/// `A = [1 0 0 0; 1 1 1 1; 1 -1 1 -1; 1 2 4 8; 1 -2 4 -8; 0 0 0 1]`.
#[inline(always)]
fn transform_output_grads<T: Element>(g: &ConvGeom, tiles: Tiles, dy: &[T], nb: usize, n: usize, d: &mut [T]) {
    let (wo, dl) = (g.wo, g.co * n);
    for img in 0..nb {
        for o in 0..g.co {
            let plane = &dy[(img * g.co + o) * g.p()..][..g.p()];
            for ty in 0..tiles.ty {
                let col = o * n + (img * tiles.ty + ty) * wo;
                let (d0, rest) = d.split_at_mut(dl);
                let (d1, rest) = rest.split_at_mut(dl);
                let (d2, rest) = rest.split_at_mut(dl);
                let (d3, rest) = rest.split_at_mut(dl);
                let (d4, d5) = rest.split_at_mut(dl);
                let (d0, d1, d2) = (&mut d0[col..][..wo], &mut d1[col..][..wo], &mut d2[col..][..wo]);
                let (d3, d4, d5) = (&mut d3[col..][..wo], &mut d4[col..][..wo], &mut d5[col..][..wo]);
                let live = (g.ho - 4 * ty).min(4);
                let rows = &plane[4 * ty * wo..][..live * wo];
                for_blocks!(wo, |at, W| {
                    // e[j]: output row 4 ty + j, zero past the last row.
                    let mut e = [[T::zero(); W]; 4];
                    for (ej, r) in e.iter_mut().zip(rows.chunks_exact(wo)) {
                        *ej = load::<T, W>(r, at);
                    }
                    let out = a6(&e);
                    for (dst, o) in [&mut *d0, &mut *d1, &mut *d2, &mut *d3, &mut *d4, &mut *d5].into_iter().zip(&out) {
                        dst[at..at + W].copy_from_slice(o);
                    }
                });
            }
        }
    }
}

/// Scratch for `transform_inputs`: one padded plane and one tile's 6
/// transformed rows.
fn plane_len(tiles: Tiles) -> usize {
    (tiles.padded_rows() + XI) * tiles.pw
}

// ------------------------------------------------------------------ forward

/// `y = conv(x, w)` finished by `epi`, for a conv that [`applies`].
pub(super) fn forward<T: Element>(g: &ConvGeom, x: &[T], w: &[T], epi: &Epilogue<'_, T>, y: &mut [T]) {
    let (xi, yi) = (g.ci * g.h * g.w, g.co * g.p());
    if yi == 0 || g.n == 0 {
        return;
    }
    let tiles = Tiles::of(g);
    let nb = tiles.images_per_group(g);
    let u = transform_kernels(g, w);
    y[..g.n * yi].par_chunks_mut(nb * yi).enumerate().for_each(|(grp, y)| {
        let cnt = y.len() / yi;
        forward_group(g, tiles, &u, &x[grp * nb * xi..][..cnt * xi], y, cnt);
        epi.apply(g, grp * nb, y);
    });
}

fn forward_group<T: Element>(g: &ConvGeom, tiles: Tiles, u: &[T], x: &[T], y: &mut [T], nb: usize) {
    let n = nb * tiles.columns(g);
    let (vl, ml, ul) = (3 * g.ci * n, g.co * n, g.co * 3 * g.ci);
    with_scratch::<T, _>(XI * vl + XI * ml + plane_len(tiles), |buf| {
        let (v, rest) = buf.split_at_mut(XI * vl);
        let (m, scratch) = rest.split_at_mut(XI * ml);
        widest(
            #[inline(always)]
            || transform_inputs(g, tiles, x, nb, n, v, scratch),
        );
        for xi in 0..XI {
            let uk = MatRef::row_major(&u[xi * ul..][..ul], g.co, 3 * g.ci);
            let vk = MatRef::row_major(&v[xi * vl..][..vl], 3 * g.ci, n);
            matmul(uk, vk, &mut m[xi * ml..][..ml], false, Threads::Serial);
        }
        widest(
            #[inline(always)]
            || transform_outputs(g, tiles, m, nb, n, y),
        );
    });
}

// ---------------------------------------------------------- backward weight

/// `dw = sum over images of the weight gradient`, for a conv that
/// [`applies`]: images in at most `WEIGHT_SLOTS` contiguous slots, each
/// accumulating `dU` in image order, the slots summed in slot order, then
/// `G^T dU`. With `bias_terms`, also each dy plane's f64 sum as
/// `[o * n + img]` (taken while the group's dy is in cache); else none.
pub(super) fn backward_weight<T: Element>(g: &ConvGeom, dy: &[T], x: &[T], dw: &mut [T], bias_terms: bool) -> Vec<f64> {
    let (ulen, wlen) = (XI * g.co * 3 * g.ci, g.co * g.ci * 9);
    if g.n == 0 || wlen == 0 {
        dw[..wlen].fill(T::zero());
        return if bias_terms { by_channel(&plane_sums(dy, g.n * g.co, g.p()), g.n, g.co) } else { Vec::new() };
    }
    let tiles = Tiles::of(g);
    let nb = tiles.images_per_group(g);
    let slots = weight_slots(g.n, nb, WEIGHT_SLOTS);
    with_partials(slots.len() * ulen, |partials: &mut [T]| {
        let sums: Vec<Vec<f64>> = partials
            .par_chunks_mut(ulen)
            .zip(slots)
            .map(|(part, imgs)| weight_slot(g, tiles, dy, x, imgs, nb, part, bias_terms))
            .collect();
        let mut du = vec![T::zero(); ulen];
        sum_partials(partials, ulen, &mut du);
        untransform_kernels(g, &du, dw);
        if bias_terms {
            by_channel(&sums.concat(), g.n, g.co)
        } else {
            Vec::new()
        }
    })
}

/// Accumulates `dU` (as `[ξ][3 ci][co]`) of the images `imgs` into `part`, `nb`
/// images per group of gemms; with `bias_terms`, returns their dy planes'
/// sums (`[img][o]`).
#[allow(clippy::too_many_arguments)]
fn weight_slot<T: Element>(
    g: &ConvGeom,
    tiles: Tiles,
    dy: &[T],
    x: &[T],
    imgs: Range<usize>,
    nb: usize,
    part: &mut [T],
    bias_terms: bool,
) -> Vec<f64> {
    let (xi, yi) = (g.ci * g.h * g.w, g.co * g.p());
    let ul = g.co * 3 * g.ci;
    let mut sums = Vec::with_capacity(if bias_terms { imgs.len() * g.co } else { 0 });
    let mut start = imgs.start;
    while start < imgs.end {
        let cnt = nb.min(imgs.end - start);
        let n = cnt * tiles.columns(g);
        let (vl, dl) = (3 * g.ci * n, g.co * n);
        let (dy, x) = (&dy[start * yi..][..cnt * yi], &x[start * xi..][..cnt * xi]);
        let acc = start > imgs.start;
        with_scratch::<T, _>(XI * vl + XI * dl + plane_len(tiles), |buf| {
            let (v, rest) = buf.split_at_mut(XI * vl);
            let (d, scratch) = rest.split_at_mut(XI * dl);
            widest(
                #[inline(always)]
                || {
                    transform_inputs(g, tiles, x, cnt, n, v, scratch);
                    transform_output_grads(g, tiles, dy, cnt, n, d);
                    if bias_terms {
                        sums.extend(plane_sums(dy, cnt * g.co, g.p()));
                    }
                },
            );
            for xi in 0..XI {
                // dU_ξ^T [3ci x co] (+)= V_ξ [3ci x n] * D_ξ^T [n x co]: the
                // longer side as the gemm's M packs the shorter operand.
                let vk = MatRef::row_major(&v[xi * vl..][..vl], 3 * g.ci, n);
                let dk = MatRef::row_major_t(&d[xi * dl..][..dl], g.co, n);
                matmul(vk, dk, &mut part[xi * ul..][..ul], acc, Threads::Serial);
            }
        });
        start += cnt;
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::super::winograd_tests::{check_against_f64_loops, SHAPES};
    use super::{backward_weight, forward};

    #[test]
    fn forward_and_weight_gradient_match_f64_loops_at_any_size() {
        check_against_f64_loops(&SHAPES, forward, backward_weight);
    }
}
