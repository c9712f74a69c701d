//! Winograd F(2x2, 3x3) for the weight gradient of the f32 3x3 stride-1
//! convolutions with 128 or more channels each way (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016). The forward of such
//! a conv is `A^T [(G g G^T) ⊙ (B^T d B)] A` per 2x2 block of outputs (a
//! tile), for the tile's 4x4 input patch `d` and each 3x3 kernel `g`: 16
//! multiplies per tile and channel pair instead of 36. Differentiating it,
//! `dU_ξ [Co x Ci] = sum over tiles of D_ξ [Co x T] * V_ξ^T` (one gemm per
//! element ξ of the 4x4 transformed tile) with `V = B^T d B` per tile and
//! input channel and `D = A dY A^T` per output tile (zero past the output's
//! edge), then `dW = G^T dU G` per kernel. The gemms' inner dimension is the
//! number of tiles, not 9 Ci.
//!
//! The forward (and so the stride-1 data gradient) of these convs goes
//! through `winograd_1d.rs` instead, which measured faster at every size the
//! presets have (128 channels at 32x32: 6.3 ms against 8.8 ms, batch 8); at
//! the weight gradient this 2-D form is faster from 256 channels at 16x16 and
//! below 8x8, level at 128 channels at 32x32 (BENCHMARKS.md, 2026-12-01).
//!
//! The transforms' coefficients are 0, ±1 and ±1/2, so they add rounding but
//! no scaling error; `crates/tensor/tests/conv2d.rs` holds the results to the
//! same f64 oracles and bounds as the direct path. f64 stays on the direct
//! path (it is the reference of the reference tests).
//!
//! The transforms run along rows of tiles, `LANES` tiles at a time: a padded
//! input row split into its even and odd columns gives each of a tile's 4
//! patch columns as one unit-stride block, and the transformed tiles are
//! stored `[ξ][channel][tile]`, so each gemm reads plain row-major matrices.
//!
//! Work is split by image groups of about `TARGET_TILES` tiles (the shape
//! decides, never the thread count), and the weight gradient sums per-slot
//! partials in slot order, so results are bit-identical for any thread count.

// The transforms index several small arrays by one position: range loops
// read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use super::super::simd::widest;
use super::{images_per_group, matmul, sum_partials, weight_slots, with_partials, with_scratch, MatRef, Threads};
use crate::geom::ConvGeom;
use crate::Element;
use rayon::prelude::*;
use std::any::TypeId;
use std::ops::Range;

/// Tiles one group of gemms sees: about one 28x28 image, so that the
/// transformed input and output (16 Ci T and 16 Co T values) stay in L2.
const TARGET_TILES: usize = 196;

/// Most partial weight gradients (16 Co Ci values each) alive at once: a
/// fixed number, never the thread count, so the summation order is the same
/// everywhere. Fewer than the direct path's 16, since each is 16/9 the size
/// and summing them is memory-bound (at 8 slots a 32x32 batch of 8 measured
/// slower than the direct path).
const WEIGHT_SLOTS: usize = 4;

/// Fewest input and output channels for which the transforms pay off: they
/// cost O(C) per tile against the gemms' O(C^2), and at 32 and 64 channels
/// the direct path, and now the 1-D F(4, 3), measured faster
/// (`benches/ops/conv2d.rs`, 2 threads, AVX-512).
const MIN_CHANNELS: usize = 128;

fn is_3x3_stride_1<T: Element>(g: &ConvGeom) -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>() && g.kh == 3 && g.kw == 3 && g.stride == 1 && g.ho > 0 && g.wo > 0
}

/// Whether the weight gradient runs here.
pub(super) fn applies_weight<T: Element>(g: &ConvGeom) -> bool {
    is_3x3_stride_1::<T>(g) && g.ci >= MIN_CHANNELS && g.co >= MIN_CHANNELS
}

/// The tiling of one image's output: `th x tw` tiles of 2x2.
#[derive(Clone, Copy)]
struct Tiles {
    th: usize,
    tw: usize,
}

impl Tiles {
    fn of(g: &ConvGeom) -> Self {
        Tiles { th: g.ho.div_ceil(2), tw: g.wo.div_ceil(2) }
    }

    fn per_image(&self) -> usize {
        self.th * self.tw
    }

    /// Images per group: about `TARGET_TILES` tiles.
    fn images_per_group(&self, n: usize) -> usize {
        images_per_group(n, self.per_image(), TARGET_TILES)
    }
}

// ------------------------------------------------------------ transforms

/// Tiles one transform step handles at once (one AVX-512 register of f32).
const LANES: usize = 16;

type Lanes<T> = [T; LANES];

// Plain loops over fixed-size arrays: everything here is inlined into the
// `widest` dispatch and compiled as whole-register operations (closures,
// `array::from_fn` included, are not reliably inlined there).

/// `B^T x` for a 4-vector of blocks, `B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`.
#[inline(always)]
fn bt4<T: Element>(x: [&Lanes<T>; 4], out: &mut [Lanes<T>; 4]) {
    for i in 0..LANES {
        out[0][i] = x[0][i] - x[2][i];
        out[1][i] = x[1][i] + x[2][i];
        out[2][i] = x[2][i] - x[1][i];
        out[3][i] = x[1][i] - x[3][i];
    }
}

/// `A x`, `A = [1 0; 1 1; 1 -1; 0 -1]`.
#[inline(always)]
fn a2<T: Element>(x: [&Lanes<T>; 2], out: &mut [Lanes<T>; 4]) {
    for i in 0..LANES {
        out[0][i] = x[0][i];
        out[1][i] = x[0][i] + x[1][i];
        out[2][i] = x[0][i] - x[1][i];
        out[3][i] = -x[1][i];
    }
}

/// `dW[o][c] = G^T dU[o][c] G` (`dU` as `[ξ][o][c]`), with
/// `G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]` (the forward's `U = G w G^T`).
fn untransform_kernels<T: Element>(g: &ConvGeom, du: &[T], dw: &mut [T]) {
    let half = T::from_f64(0.5);
    let (co, ci) = (g.co, g.ci);
    // G^T = [1 ½ ½ 0; 0 ½ -½ 0; 0 ½ ½ 1] applied to a 4-vector.
    let gt = |a: T, b: T, c: T, d: T| [a + (b + c) * half, (b - c) * half, (b + c) * half + d];
    for o in 0..co {
        for c in 0..ci {
            let at = |xi: usize| du[(xi * co + o) * ci + c];
            // G^T dU: 3 rows of 4, column by column; then each row times G.
            let cols: [[T; 3]; 4] = std::array::from_fn(|b| gt(at(b), at(4 + b), at(8 + b), at(12 + b)));
            let k = &mut dw[(o * ci + c) * 9..][..9];
            for i in 0..3 {
                k[3 * i..3 * i + 3].copy_from_slice(&gt(cols[0][i], cols[1][i], cols[2][i], cols[3][i]));
            }
        }
    }
}

/// The layout of one group's transformed tiles, `[ξ][channel][tile]`: rows
/// of `t` tiles, `LANES` apart more than that, so that a block of `LANES`
/// tiles can always be stored whole (the extra lanes land in tiles written
/// later, or past the row's end).
#[derive(Clone, Copy)]
struct Rows {
    t: usize,
    stride: usize,
}

impl Rows {
    fn new(t: usize) -> Self {
        Rows { t, stride: t + LANES }
    }

    fn len(&self, channels: usize) -> usize {
        16 * channels * self.stride
    }
}

/// One plane padded by the conv's padding and split into its even and odd
/// columns: `even[py][j] = p[py][2j]`, `odd[py][j] = p[py][2j + 1]`, rows of
/// `tw + 1 + LANES` (zero past the plane), `2 th + 2` rows.
#[inline(always)]
fn split_plane<T: Element>(g: &ConvGeom, tiles: Tiles, src: &[T], even: &mut [T], odd: &mut [T]) {
    let es = tiles.tw + 1 + LANES;
    for py in 0..2 * tiles.th + 2 {
        let (e, o) = (&mut even[py * es..][..es], &mut odd[py * es..][..es]);
        let iy = py as isize - g.pad_top as isize;
        if iy < 0 || iy >= g.h as isize {
            e.fill(T::zero());
            o.fill(T::zero());
            continue;
        }
        let row = &src[iy as usize * g.w..][..g.w];
        // Column px = 2j (+1) reads input column px - pad_left: split into
        // the zero margins and a plain stride-2 copy between them.
        let (pl, w) = (g.pad_left, g.w);
        let valid = |first: usize| {
            // j with 0 <= 2j + first - pl < w
            let lo = pl.saturating_sub(first).div_ceil(2);
            let hi = (w + pl).saturating_sub(first).div_ceil(2).min(es);
            lo..hi.max(lo)
        };
        for (dst, first) in [(e, 0), (o, 1)] {
            let js = valid(first);
            dst[..js.start].fill(T::zero());
            dst[js.end..].fill(T::zero());
            if js.is_empty() {
                continue; // (a zero-width input: only padding)
            }
            let src0 = 2 * js.start + first - pl;
            for (d, s) in dst[js.clone()].iter_mut().zip(row[src0..].iter().step_by(2)) {
                *d = *s;
            }
        }
    }
}

/// `V[ξ][c][t] = (B^T d B)[ξ]` for the tiles of `nb` images of `x`, in
/// blocks of `LANES` tiles along a tile row: the 4 padded rows of the tile
/// row, as even and odd columns, give every `B^T` step as whole blocks.
#[inline(always)]
fn transform_inputs<T: Element>(
    g: &ConvGeom,
    tiles: Tiles,
    x: &[T],
    nb: usize,
    rows: Rows,
    v: &mut [T],
    buf: &mut [T],
) {
    let (es, ph) = (tiles.tw + 1 + LANES, 2 * tiles.th + 2);
    let (even, odd) = buf[..2 * ph * es].split_at_mut(ph * es);
    let plane = g.h * g.w;
    let mut r = [[[T::zero(); LANES]; 4]; 4]; // r[column kind][a]: B^T over the 4 rows
    let mut out = [[T::zero(); LANES]; 4];
    for img in 0..nb {
        for c in 0..g.ci {
            split_plane(g, tiles, &x[(img * g.ci + c) * plane..][..plane], even, odd);
            for ty in 0..tiles.th {
                let t0 = img * tiles.per_image() + ty * tiles.tw;
                let mut tx0 = 0;
                while tx0 < tiles.tw {
                    // Columns 2tx, 2tx+1, 2tx+2, 2tx+3 of the patch are even[tx],
                    // odd[tx], even[tx+1], odd[tx+1].
                    for (kind, (src, shift)) in
                        [(&*even, 0), (&*odd, 0), (&*even, 1), (&*odd, 1)].into_iter().enumerate()
                    {
                        let mut d = [[T::zero(); LANES]; 4];
                        for (k, dk) in d.iter_mut().enumerate() {
                            dk.copy_from_slice(&src[(2 * ty + k) * es + tx0 + shift..][..LANES]);
                        }
                        bt4([&d[0], &d[1], &d[2], &d[3]], &mut r[kind]);
                    }
                    for a in 0..4 {
                        bt4([&r[0][a], &r[1][a], &r[2][a], &r[3][a]], &mut out);
                        for (b, lanes) in out.iter().enumerate() {
                            let at = ((4 * a + b) * g.ci + c) * rows.stride + t0 + tx0;
                            v[at..at + LANES].copy_from_slice(lanes);
                        }
                    }
                    tx0 += LANES;
                }
            }
        }
    }
}

/// `D[ξ][o][t] = (A dY A^T)[ξ]` per output tile (zero past the output's
/// edge): `d` as `[ξ][co][t]`.
#[inline(always)]
fn transform_output_grads<T: Element>(g: &ConvGeom, tiles: Tiles, dy: &[T], nb: usize, rows: Rows, d: &mut [T]) {
    // pair[r][s]: output row 2ty + r, columns 2tx + s, for a block of tiles.
    let mut pair = [[[T::zero(); LANES]; 2]; 2];
    let mut z = [[[T::zero(); LANES]; 4]; 2]; // z[s][a] = (A dy)[a][s]
    let mut out = [[T::zero(); LANES]; 4];
    for img in 0..nb {
        for o in 0..g.co {
            let plane = &dy[(img * g.co + o) * g.p()..][..g.p()];
            for ty in 0..tiles.th {
                let t0 = img * tiles.per_image() + ty * tiles.tw;
                let mut tx0 = 0;
                while tx0 < tiles.tw {
                    for (r, pr) in pair.iter_mut().enumerate() {
                        let oy = 2 * ty + r;
                        for s in 0..2 {
                            for j in 0..LANES {
                                let ox = 2 * (tx0 + j) + s;
                                pr[s][j] = if oy < g.ho && ox < g.wo { plane[oy * g.wo + ox] } else { T::zero() };
                            }
                        }
                    }
                    for (s, zs) in z.iter_mut().enumerate() {
                        a2([&pair[0][s], &pair[1][s]], zs);
                    }
                    for a in 0..4 {
                        a2([&z[0][a], &z[1][a]], &mut out);
                        for (b, lanes) in out.iter().enumerate() {
                            let at = ((4 * a + b) * g.co + o) * rows.stride + t0 + tx0;
                            d[at..at + LANES].copy_from_slice(lanes);
                        }
                    }
                    tx0 += LANES;
                }
            }
        }
    }
}

/// Scratch for `split_plane`'s even and odd rows.
fn split_len(tiles: Tiles) -> usize {
    2 * (2 * tiles.th + 2) * (tiles.tw + 1 + LANES)
}

// ---------------------------------------------------------- backward weight

/// `dw = sum over images of the weight gradient`, for a conv that [`applies_weight`]:
/// images in at most `WEIGHT_SLOTS` contiguous slots, each accumulating
/// `dU` in image order, the slots summed in slot order, then `G^T dU G`.
pub(super) fn backward_weight<T: Element>(g: &ConvGeom, dy: &[T], x: &[T], dw: &mut [T]) {
    let (ulen, wlen) = (16 * g.co * g.ci, g.co * g.ci * 9);
    if g.n == 0 || wlen == 0 {
        dw[..wlen].fill(T::zero());
        return;
    }
    let tiles = Tiles::of(g);
    let nb = tiles.images_per_group(g.n);
    let slots = weight_slots(g.n, nb, WEIGHT_SLOTS);
    with_partials(slots.len() * ulen, |partials: &mut [T]| {
        partials.par_chunks_mut(ulen).zip(slots).for_each(|(part, imgs)| weight_slot(g, tiles, dy, x, imgs, nb, part));
        let mut du = vec![T::zero(); ulen];
        sum_partials(partials, ulen, &mut du);
        untransform_kernels(g, &du, dw);
    });
}

/// Accumulates `dU` (`[ξ][co][ci]`) of the images `imgs` into `part`, `nb`
/// images per group of gemms.
fn weight_slot<T: Element>(
    g: &ConvGeom,
    tiles: Tiles,
    dy: &[T],
    x: &[T],
    imgs: Range<usize>,
    nb: usize,
    part: &mut [T],
) {
    let (xi, yi) = (g.ci * g.h * g.w, g.co * g.p());
    let mut start = imgs.start;
    while start < imgs.end {
        let cnt = nb.min(imgs.end - start);
        let rows = Rows::new(cnt * tiles.per_image());
        let (vlen, dlen) = (rows.len(g.ci), rows.len(g.co));
        let (dy, x) = (&dy[start * yi..][..cnt * yi], &x[start * xi..][..cnt * xi]);
        let acc = start > imgs.start;
        with_scratch::<T, _>(vlen + dlen + split_len(tiles), |buf| {
            let (v, rest) = buf.split_at_mut(vlen);
            let (d, split) = rest.split_at_mut(dlen);
            widest(
                #[inline(always)]
                || {
                    transform_inputs(g, tiles, x, cnt, rows, v, split);
                    transform_output_grads(g, tiles, dy, cnt, rows, d);
                },
            );
            for xi in 0..16 {
                let dk =
                    MatRef { data: &d[xi * g.co * rows.stride..], rows: g.co, cols: rows.t, rs: rows.stride, cs: 1 };
                let vk =
                    MatRef { data: &v[xi * g.ci * rows.stride..], rows: rows.t, cols: g.ci, rs: 1, cs: rows.stride };
                matmul(dk, vk, &mut part[xi * g.co * g.ci..][..g.co * g.ci], acc, Threads::Serial);
            }
        });
        start += cnt;
    }
}

#[cfg(test)]
mod tests {
    //! The transforms at any channel count (the ops only route 128 and up
    //! here; `tests/conv2d.rs` checks those through the public ops), against
    //! naive f64 loops.
    use super::*;

    fn geom(
        n: usize,
        ci: usize,
        co: usize,
        (h, w): (usize, usize),
        (pt, pb, pl, pr): (usize, usize, usize, usize),
    ) -> ConvGeom {
        let (ho, wo) = (h + pt + pb - 2, w + pl + pr - 2);
        ConvGeom { n, ci, h, w, co, kh: 3, kw: 3, stride: 1, pad_top: pt, pad_left: pl, ho, wo }
    }

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Calls `f(y index, x index, w index)` for every product of the conv.
    fn terms(g: &ConvGeom, mut f: impl FnMut(usize, usize, usize)) {
        for (n, o, oy, ox) in outputs(g) {
            for c in 0..g.ci {
                for i in 0..3 {
                    for j in 0..3 {
                        let (iy, ix) =
                            ((oy + i) as isize - g.pad_top as isize, (ox + j) as isize - g.pad_left as isize);
                        if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                            let xi = ((n * g.ci + c) * g.h + iy as usize) * g.w + ix as usize;
                            f(((n * g.co + o) * g.ho + oy) * g.wo + ox, xi, (o * g.ci + c) * 9 + i * 3 + j);
                        }
                    }
                }
            }
        }
    }

    fn outputs(g: &ConvGeom) -> Vec<(usize, usize, usize, usize)> {
        let mut v = Vec::new();
        for n in 0..g.n {
            for o in 0..g.co {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        v.push((n, o, oy, ox));
                    }
                }
            }
        }
        v
    }

    /// |got - want| <= tol * sum |terms| for every element.
    fn assert_close(what: &str, got: &[f32], want: &[f64], scale: &[f64], tol: f64) {
        for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
            assert!((g as f64 - w).abs() <= tol * s.max(1e-30), "{what}[{i}]: {g} vs {w} (scale {s})");
        }
    }

    #[test]
    fn weight_gradient_matches_f64_loops_at_any_size() {
        let shapes = [
            (1, 1, 1, (1, 1), (1, 1, 1, 1)),
            (2, 3, 5, (7, 7), (1, 1, 1, 1)),
            (3, 17, 9, (14, 13), (1, 1, 1, 1)),
            (1, 16, 33, (5, 37), (2, 0, 0, 2)),
            (2, 8, 8, (3, 4), (0, 0, 0, 0)),
            (1, 20, 4, (31, 34), (0, 2, 1, 1)),
            // Only padding: an input with no columns, or no rows.
            (1, 4, 4, (3, 0), (1, 1, 2, 2)),
            (2, 4, 3, (0, 5), (2, 2, 1, 1)),
        ];
        for (k, &(n, ci, co, hw, pads)) in shapes.iter().enumerate() {
            let g = geom(n, ci, co, hw, pads);
            let x = values(n * ci * g.h * g.w, 1 + k as u64);
            let dy = values(n * co * g.p(), 99 + k as u64);
            let mut dw = vec![f32::NAN; co * ci * 9];
            backward_weight(&g, &dy, &x, &mut dw);

            let (mut want_dw, mut scale_dw) = (vec![0f64; dw.len()], vec![0f64; dw.len()]);
            terms(&g, |yi, xi, wi| {
                want_dw[wi] += dy[yi] as f64 * x[xi] as f64;
                scale_dw[wi] += (dy[yi] as f64 * x[xi] as f64).abs();
            });
            assert_close(&format!("weight gradient {g:?}"), &dw, &want_dw, &scale_dw, 1e-5);
        }
    }
}
