//! Winograd F(4x4, 3x3) for the f32 3x3 stride-1 convolutions with 128 or
//! more channels each way and 384 or more both together (the CIFAR-10
//! model's, from 32x32 down to 4x4, but 128 -> 128): forward, so the
//! stride-1 data gradient, and weight gradient. It is F(4, 3) of `winograd_1d.rs`
//! applied along both axes (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016): a tile of 4x4 outputs is
//! `A^T [(G g G^T) ⊙ (B^T d B)] A` for the tile's 6x6 input patch `d` and each
//! kernel `g`, 36 multiplies per tile and channel pair instead of 144 (the
//! 1-D form's 72). At these channel counts the gemms' inner dimension, Ci,
//! is long enough without the 1-D form's 3 Ci.
//!
//! - forward:         `M_ξ [Co x N] = U_ξ [Co x Ci] * V_ξ [Ci x N]` for each of
//!   the 36 points ξ, `U = G w G^T` per kernel, `V = B^T d B` per tile and
//!   input channel, then `A^T M A` per tile and output channel, cut to the
//!   output's edge;
//! - backward data:   the parent's stride-1 path is the forward conv of dy with
//!   the flipped, transposed kernel, so it comes here too;
//! - backward weight: `dU_ξ [Co x Ci] = sum over tiles of D_ξ V_ξ^T` with
//!   `D = A dY A^T` per output tile (zero past the output's edge), then
//!   `dW = G^T dU G`.
//!
//! The batch is cut into chunks of about `TARGET_TILES` tiles (the shape
//! decides, never the thread count). Each chunk runs in three parallel
//! passes: the transforms, one task per channel; the 36 gemms, one task per
//! ξ; the output transforms, one task per output plane. The weight gradient
//! accumulates each `dU_ξ` over the chunks in chunk order inside its own
//! gemm, so there are no per-thread partials to sum and every result is
//! bit-identical for any thread count.
//!
//! The transforms run along rows of tiles, a block of tiles at a time: a
//! padded input plane split into its 4 column phases (`p[y][4j + k]` is phase
//! `k`, element `j`) gives each of a tile's 6 patch columns as one
//! unit-stride block. The kernels' transforms run in f64 and round once, as
//! in `winograd_1d.rs`; `B^T` has integer coefficients up to 5 and `A^T`
//! powers of two up to 8 on both axes, more rounding than the 1-D form,
//! held by `crates/tensor/tests/conv2d.rs` to the same f64 oracles and
//! bounds as the direct path. f64 stays on the direct path.

// The transforms index several small arrays by one position: range loops
// read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use super::super::gemm::{matmul_strided, MatRef, Threads};
use super::super::simd::widest;
use super::blocks::{copy_run, is_f32_3x3_stride_1, load};
use super::f43::{a6, at4, bt6};
use super::{by_channel, images_per_group, plane_sums, with_partials, with_scratch, zero_few, Epilogue};
use crate::geom::ConvGeom;
use crate::Element;
use rayon::prelude::*;

/// Points of the transformed 6x6 tile, `ξ = 6a + b`.
const XI: usize = 36;

/// Fewest input and output channels, and fewest of both together: below,
/// the 1-D F(4, 3), whose inner dimension is 3 Ci, measured faster (at 128
/// each way 7.4 against 8.8 ms for the forward at 32x32, batch 8; level for
/// the weight gradient; from 128 -> 256 and 384 -> 128 on, this one wins or is level).
const MIN_CHANNELS: usize = 128;
const MIN_CHANNELS_BOTH: usize = 384;

/// Fewest tiles in the batch: each call transforms all `Co x Ci` kernels,
/// which only pays over enough tiles (at 8, 256 channels at 4x4 and batch 8,
/// it still measured 1.1-2.2x faster than the 1-D form).
const MIN_TILES: usize = 8;

/// Tiles one chunk covers: its transformed inputs (36 Ci per tile) and
/// products (36 Co per tile) are the pass's working set, held between calls.
/// 64 measured faster than 128 on the CIFAR-10 step (1.16 against 1.21 s,
/// batch 8) and 12 MB smaller; 32 level with 64.
const TARGET_TILES: usize = 64;

/// Whether a conv runs here (forward, stride-1 data gradient and weight
/// gradient alike).
pub(super) fn applies<T: Element>(g: &ConvGeom) -> bool {
    is_f32_3x3_stride_1::<T>(g)
        && g.ci >= MIN_CHANNELS
        && g.co >= MIN_CHANNELS
        && g.ci + g.co >= MIN_CHANNELS_BOTH
        && g.n * Tiles::of(g).per_image() >= MIN_TILES
}

/// The tiling of one image: `th x tw` tiles of 4x4 outputs.
#[derive(Clone, Copy)]
struct Tiles {
    th: usize,
    tw: usize,
}

impl Tiles {
    fn of(g: &ConvGeom) -> Self {
        Tiles { th: g.ho.div_ceil(4), tw: g.wo.div_ceil(4) }
    }

    fn per_image(&self) -> usize {
        self.th * self.tw
    }

    /// Images per chunk: about `TARGET_TILES` tiles.
    fn images_per_chunk(&self, n: usize) -> usize {
        images_per_group(n, self.per_image(), TARGET_TILES)
    }
}

/// The stride for rows of `len` values: the next odd multiple of 16 (64
/// bytes). The transforms touch 36 rows at once and the gemms pack rows
/// whole; power-of-two strides (128 channels of 128 tiles) would put them
/// all in the same cache sets.
fn skew(len: usize) -> usize {
    let lines = len.div_ceil(16);
    16 * (lines | 1)
}

/// A chunk's transformed values, `[channel][ξ][tile]`: `n` tiles a row,
/// rows `row` apart, channels `chan` apart.
#[derive(Clone, Copy)]
struct Rows {
    n: usize,
    row: usize,
    chan: usize,
}

impl Rows {
    fn new(n: usize) -> Self {
        let row = skew(n);
        Rows { n, row, chan: skew(XI * row) }
    }

    /// `V_ξ` or `D_ξ` as a `channels x n` matrix.
    fn matrix<'a, T>(&self, data: &'a [T], xi: usize, channels: usize) -> MatRef<'a, T> {
        MatRef { data: &data[xi * self.row..], rows: channels, cols: self.n, rs: self.chan, cs: 1 }
    }
}

/// One chunk of the batch: `cnt` images, their tiles laid out as `layout`.
#[derive(Clone, Copy)]
struct Chunk<'a> {
    g: &'a ConvGeom,
    tiles: Tiles,
    cnt: usize,
    layout: Rows,
}

impl<'a> Chunk<'a> {
    fn new(g: &'a ConvGeom, tiles: Tiles, cnt: usize) -> Self {
        Chunk { g, tiles, cnt, layout: Rows::new(cnt * tiles.per_image()) }
    }
}

/// `G y` for blocks of kernel columns or rows `y`, in f64: `G = [1/4 0 0;
/// -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]`.
#[inline(always)]
fn g6<const L: usize>(y: &[[f64; L]; 3]) -> [[f64; L]; 6] {
    let (q4, q6, q12, q24) = (0.25, 1.0 / 6.0, 1.0 / 12.0, 1.0 / 24.0);
    let mut out = [[0.0; L]; 6];
    for i in 0..L {
        let (y0, y1, y2) = (y[0][i], y[1][i], y[2][i]);
        let (s, q, h) = (y0 + y2, y0 * q24 + y2 * q6, y1 * q12);
        out[0][i] = y0 * q4;
        out[1][i] = -(s + y1) * q6;
        out[2][i] = -(s - y1) * q6;
        out[3][i] = q + h;
        out[4][i] = q - h;
        out[5][i] = y2;
    }
    out
}

/// `G^T x` (the adjoint of [`g6`]).
#[inline(always)]
fn gt3<const L: usize>(x: &[[f64; L]; 6]) -> [[f64; L]; 3] {
    let (q4, q6, q12, q24) = (0.25, 1.0 / 6.0, 1.0 / 12.0, 1.0 / 24.0);
    let mut out = [[0.0; L]; 3];
    for i in 0..L {
        let (s, d) = (x[1][i] + x[2][i], x[1][i] - x[2][i]);
        let (p, m) = (x[3][i] + x[4][i], x[3][i] - x[4][i]);
        out[0][i] = (x[0][i] * q4 - s * q6) + p * q24;
        out[1][i] = m * q12 - d * q6;
        out[2][i] = (p - s) * q6 + x[5][i];
    }
    out
}

// ---------------------------------------------------- kernel transforms

/// `U = G w G^T` per kernel, as `[co][ξ][ci]` with output channels
/// `kernel_stride(g)` apart (so that `U_ξ` is a `Co x Ci` matrix), in f64
/// rounded once; blocks of input channels side by side in the lanes.
fn transform_kernels<T: Element>(g: &ConvGeom, w: &[T], u: &mut [T]) {
    let ci = g.ci;
    u[..g.co * kernel_stride(g)].par_chunks_mut(kernel_stride(g)).enumerate().for_each(|(o, uo)| {
        let wo = &w[o * ci * 9..][..ci * 9];
        widest(
            #[inline(always)]
            || {
                for_blocks!(ci, |c0, L| {
                    let mut k = [[0f64; L]; 9];
                    for l in 0..L {
                        for t in 0..9 {
                            k[t][l] = wo[(c0 + l) * 9 + t].to_f64();
                        }
                    }
                    // G along the kernel's columns (ky), then along its rows (kx).
                    let mut cols = [[[0f64; L]; 6]; 3];
                    for kx in 0..3 {
                        cols[kx] = g6(&[k[kx], k[3 + kx], k[6 + kx]]);
                    }
                    for a in 0..6 {
                        let row = g6(&[cols[0][a], cols[1][a], cols[2][a]]);
                        for b in 0..6 {
                            let dst = &mut uo[(6 * a + b) * ci + c0..][..L];
                            for l in 0..L {
                                dst[l] = T::from_f64(row[b][l]);
                            }
                        }
                    }
                });
            },
        )
    });
}

fn kernel_stride(g: &ConvGeom) -> usize {
    skew(XI * g.ci)
}

/// `dW = G^T dU G` per kernel (`dU` as `[ξ][co][ci]`, the points
/// `gradient_stride(g)` apart), in f64 rounded once: the adjoint of
/// [`transform_kernels`].
fn untransform_kernels<T: Element>(g: &ConvGeom, du: &[T], dw: &mut [T]) {
    let (co, ci, stride) = (g.co, g.ci, gradient_stride(g));
    dw[..co * ci * 9].par_chunks_mut(ci * 9).enumerate().for_each(|(o, dwo)| {
        widest(
            #[inline(always)]
            || {
                for_blocks!(ci, |c0, L| {
                    // G^T along b (kx), then along a (ky).
                    let mut rows = [[[0f64; L]; 3]; 6];
                    for a in 0..6 {
                        let mut x = [[0f64; L]; 6];
                        for b in 0..6 {
                            let src = &du[(6 * a + b) * stride + o * ci + c0..][..L];
                            for l in 0..L {
                                x[b][l] = src[l].to_f64();
                            }
                        }
                        rows[a] = gt3(&x);
                    }
                    for kx in 0..3 {
                        let col = gt3(&[rows[0][kx], rows[1][kx], rows[2][kx], rows[3][kx], rows[4][kx], rows[5][kx]]);
                        for ky in 0..3 {
                            for l in 0..L {
                                dwo[(c0 + l) * 9 + ky * 3 + kx] = T::from_f64(col[ky][l]);
                            }
                        }
                    }
                });
            },
        )
    });
}

fn gradient_stride(g: &ConvGeom) -> usize {
    skew(g.co * g.ci)
}

// ----------------------------------------------------- tile transforms

/// A plane of `h x w` values read as `rows` padded rows (`pad_top` zero rows
/// first, zeros past the plane) split into 4 column phases of `len` each:
/// `ph[(k * rows + py) * len + j] = p[py][4 j + k]`, `p` the plane shifted
/// right by `pad_left` columns.
#[derive(Clone, Copy)]
struct Phases {
    rows: usize,
    len: usize,
    pad_top: usize,
    pad_left: usize,
}

impl Phases {
    fn size(&self) -> usize {
        4 * self.rows * self.len
    }

    #[inline(always)]
    fn split<T: Element>(&self, src: &[T], h: usize, w: usize, ph: &mut [T]) {
        let (rows, len, pl) = (self.rows, self.len, self.pad_left);
        for py in 0..rows {
            let iy = py as isize - self.pad_top as isize;
            for k in 0..4 {
                let dst = &mut ph[(k * rows + py) * len..][..len];
                if iy < 0 || iy >= h as isize || w == 0 {
                    zero_few(dst);
                    continue;
                }
                // j with 0 <= 4 j + k - pl < w.
                let lo = pl.saturating_sub(k).div_ceil(4).min(len);
                let hi = (w + pl).saturating_sub(k).div_ceil(4).clamp(lo, len);
                zero_few(&mut dst[..lo]);
                zero_few(&mut dst[hi..]);
                if hi > lo {
                    let row = &src[iy as usize * w..][..w];
                    let first = 4 * lo + k - pl;
                    for (d, s) in dst[lo..hi].iter_mut().zip(row[first..].iter().step_by(4)) {
                        *d = *s;
                    }
                }
            }
        }
    }
}

/// The input phases of the tiling: `4 th + 2` padded rows of `tw + 1`
/// phase columns (the patch of tile `tx` spans columns `4 tx .. 4 tx + 6`).
fn input_phases(g: &ConvGeom, tiles: Tiles) -> Phases {
    Phases { rows: 4 * tiles.th + 2, len: tiles.tw + 1, pad_top: g.pad_top, pad_left: g.pad_left }
}

/// The output-gradient phases: `4 th` rows of `tw` phase columns.
fn output_phases(tiles: Tiles) -> Phases {
    Phases { rows: 4 * tiles.th, len: tiles.tw, pad_top: 0, pad_left: 0 }
}

/// `V[ξ][t] = (B^T d B)[ξ]` of input channel `c` for the `cnt` images of
/// `x`, as `vc[ξ * rows.row + t]`, tile `t = (img, ty, tx)`.
#[inline(always)]
fn transform_input_channel<T: Element>(ch: Chunk<'_>, x: &[T], c: usize, vc: &mut [T], ph: &mut [T]) {
    let (g, tiles, cnt, layout) = (ch.g, ch.tiles, ch.cnt, ch.layout);
    let phases = input_phases(g, tiles);
    let (rows, len, plane) = (phases.rows, phases.len, g.h * g.w);
    for img in 0..cnt {
        phases.split(&x[(img * g.ci + c) * plane..][..plane], g.h, g.w, ph);
        for ty in 0..tiles.th {
            let t0 = img * tiles.per_image() + ty * tiles.tw;
            for_blocks!(tiles.tw, |at0, W| {
                // r[s] = B^T of patch column s (phase s % 4, shifted by s / 4).
                let mut r = [[[T::zero(); W]; 6]; 6];
                for s in 0..6 {
                    let base = (s % 4) * rows + 4 * ty;
                    let mut d = [[T::zero(); W]; 6];
                    for i in 0..6 {
                        d[i] = load::<T, W>(ph, (base + i) * len + at0 + s / 4);
                    }
                    r[s] = bt6(&d);
                }
                for a in 0..6 {
                    let out = bt6(&[r[0][a], r[1][a], r[2][a], r[3][a], r[4][a], r[5][a]]);
                    for b in 0..6 {
                        vc[(6 * a + b) * layout.row + t0 + at0..][..W].copy_from_slice(&out[b]);
                    }
                }
            });
        }
    }
}

/// `D[ξ][t] = (A e A^T)[ξ]` of output channel `o` for the `cnt` images of
/// `dy`, `e` the tile's 4x4 output gradients (zero past the edge), as
/// `dc[ξ * rows.row + t]`.
#[inline(always)]
fn transform_output_grad_channel<T: Element>(ch: Chunk<'_>, dy: &[T], o: usize, dc: &mut [T], ph: &mut [T]) {
    let (g, tiles, cnt, layout) = (ch.g, ch.tiles, ch.cnt, ch.layout);
    let phases = output_phases(tiles);
    let (rows, len) = (phases.rows, phases.len);
    for img in 0..cnt {
        phases.split(&dy[(img * g.co + o) * g.p()..][..g.p()], g.ho, g.wo, ph);
        for ty in 0..tiles.th {
            let t0 = img * tiles.per_image() + ty * tiles.tw;
            for_blocks!(tiles.tw, |at0, W| {
                // z[i] = A along row 4 ty + i (over its 4 column phases).
                let mut z = [[[T::zero(); W]; 6]; 4];
                for i in 0..4 {
                    let mut e = [[T::zero(); W]; 4];
                    for k in 0..4 {
                        e[k] = load::<T, W>(ph, (k * rows + 4 * ty + i) * len + at0);
                    }
                    z[i] = a6(&e);
                }
                for b in 0..6 {
                    let col = a6(&[z[0][b], z[1][b], z[2][b], z[3][b]]);
                    for a in 0..6 {
                        dc[(6 * a + b) * layout.row + t0 + at0..][..W].copy_from_slice(&col[a]);
                    }
                }
            });
        }
    }
}

/// Output plane `o` of chunk image `img` from the products `m` (`[ξ][co][n]`,
/// rows `layout.row` apart and the points `m_stride` apart):
/// `A^T M A` per tile, cut to the output's edge. `rowbuf` holds the 4 rows
/// of one tile row, `4 tw` columns each.
#[inline(always)]
fn transform_output_plane<T: Element>(
    ch: Chunk<'_>,
    m: &[T],
    m_stride: usize,
    img: usize,
    o: usize,
    out: &mut [T],
    rowbuf: &mut [T],
) {
    let (g, tiles, layout) = (ch.g, ch.tiles, ch.layout);
    let (ml, rw, wo) = (m_stride, 4 * tiles.tw, g.wo);
    for ty in 0..tiles.th {
        let t0 = o * layout.row + img * tiles.per_image() + ty * tiles.tw;
        for_blocks!(tiles.tw, |at0, W| {
            // z[a] = A^T along row a of the 6x6 tile, over b.
            let mut z = [[[T::zero(); W]; 4]; 6];
            for a in 0..6 {
                let mut row = [[T::zero(); W]; 6];
                for b in 0..6 {
                    row[b] = load::<T, W>(m, (6 * a + b) * ml + t0 + at0);
                }
                z[a] = at4(&row);
            }
            for j in 0..4 {
                let col = at4(&[z[0][j], z[1][j], z[2][j], z[3][j], z[4][j], z[5][j]]);
                for i in 0..4 {
                    let dst = &mut rowbuf[i * rw + 4 * at0..][..4 * W];
                    for l in 0..W {
                        dst[4 * l + j] = col[i][l];
                    }
                }
            }
        });
        let live = (g.ho - 4 * ty).min(4);
        for i in 0..live {
            copy_run(&mut out[(4 * ty + i) * wo..][..wo], &rowbuf[i * rw..]);
        }
    }
}

/// `V` of the `cnt` images of `x` in `layout`: one task per input channel.
fn transform_inputs<T: Element>(ch: Chunk<'_>, x: &[T], v: &mut [T]) {
    let (g, layout) = (ch.g, ch.layout);
    let len = input_phases(g, ch.tiles).size();
    v[..g.ci * layout.chan].par_chunks_mut(layout.chan).enumerate().for_each(|(c, vc)| {
        with_scratch::<T, _>(len, |ph| {
            widest(
                #[inline(always)]
                || transform_input_channel(ch, x, c, vc, ph),
            )
        })
    });
}

// ------------------------------------------------------------------ forward

/// `y = conv(x, w)` finished by `epi`, for a conv that [`applies`].
pub(super) fn forward<T: Element>(g: &ConvGeom, x: &[T], w: &[T], epi: &Epilogue<'_, T>, y: &mut [T]) {
    let (xi, yi, p) = (g.ci * g.h * g.w, g.co * g.p(), g.p());
    if yi == 0 || g.n == 0 {
        return;
    }
    let tiles = Tiles::of(g);
    let nb = tiles.images_per_chunk(g.n);
    let most = Rows::new(nb * tiles.per_image());
    let m_stride = skew(g.co * most.row);
    let (ulen, vlen, mlen) = (g.co * kernel_stride(g), g.ci * most.chan, XI * m_stride);
    with_partials(ulen + vlen + mlen, |buf: &mut [T]| {
        let (u, rest) = buf.split_at_mut(ulen);
        let (v, m) = rest.split_at_mut(vlen);
        transform_kernels(g, w, u);
        let u = &*u;
        for start in (0..g.n).step_by(nb) {
            let cnt = nb.min(g.n - start);
            let ch = Chunk::new(g, tiles, cnt);
            let layout = ch.layout;
            transform_inputs(ch, &x[start * xi..][..cnt * xi], v);
            let v = &*v;
            // M_ξ [co x n] = U_ξ [co x ci] * V_ξ [ci x n].
            m.par_chunks_mut(m_stride).enumerate().for_each(|(k, mk)| {
                let uk = MatRef { data: &u[k * g.ci..], rows: g.co, cols: g.ci, rs: kernel_stride(g), cs: 1 };
                matmul_strided(uk, layout.matrix(v, k, g.ci), mk, layout.row, false, Threads::Serial);
            });
            let m = &*m;
            y[start * yi..][..cnt * yi].par_chunks_mut(p).enumerate().for_each(|(i, plane)| {
                let (img, o) = (i / g.co, i % g.co);
                with_scratch::<T, _>(16 * tiles.tw, |rowbuf| {
                    widest(
                        #[inline(always)]
                        || transform_output_plane(ch, m, m_stride, img, o, plane, rowbuf),
                    )
                });
                epi.apply_plane(g, start + img, o, plane);
            });
        }
    });
}

// ---------------------------------------------------------- backward weight

/// `dw = sum over images of the weight gradient`, for a conv that
/// [`applies`]: each `dU_ξ` accumulated over the chunks in order by its own
/// gemm, then `G^T dU G`.
pub(super) fn backward_weight<T: Element>(g: &ConvGeom, dy: &[T], x: &[T], dw: &mut [T], bias_terms: bool) -> Vec<f64> {
    let (xi, yi) = (g.ci * g.h * g.w, g.co * g.p());
    let wlen = g.co * g.ci * 9;
    if g.n == 0 || wlen == 0 {
        dw[..wlen].fill(T::zero());
        return if bias_terms { by_channel(&plane_sums(dy, g.n * g.co, g.p()), g.n, g.co) } else { Vec::new() };
    }
    let mut sums = vec![0.0; if bias_terms { g.n * g.co } else { 0 }];
    let tiles = Tiles::of(g);
    let nb = tiles.images_per_chunk(g.n);
    let most = Rows::new(nb * tiles.per_image());
    let (ulen, vlen, dlen) = (XI * gradient_stride(g), g.ci * most.chan, g.co * most.chan);
    let out_len = output_phases(tiles).size();
    with_partials(ulen + vlen + dlen, |buf: &mut [T]| {
        let (du, rest) = buf.split_at_mut(ulen);
        let (v, d) = rest.split_at_mut(vlen);
        for (chunk, start) in (0..g.n).step_by(nb).enumerate() {
            let cnt = nb.min(g.n - start);
            let ch = Chunk::new(g, tiles, cnt);
            let layout = ch.layout;
            transform_inputs(ch, &x[start * xi..][..cnt * xi], v);
            let dy = &dy[start * yi..][..cnt * yi];
            let chunk_sums: Vec<Vec<f64>> = d[..g.co * layout.chan]
                .par_chunks_mut(layout.chan)
                .enumerate()
                .map(|(o, dc)| {
                    with_scratch::<T, _>(out_len, |ph| {
                        widest(
                            #[inline(always)]
                            || {
                                transform_output_grad_channel(ch, dy, o, dc, ph);
                                // channel o's planes of this chunk, while in cache
                                let planes = dy.chunks_exact(g.p()).skip(o).step_by(g.co);
                                planes.take(if bias_terms { cnt } else { 0 }).map(super::sum_f64).collect()
                            },
                        )
                    })
                })
                .collect();
            if bias_terms {
                for (o, s) in chunk_sums.iter().enumerate() {
                    sums[o * g.n + start..][..cnt].copy_from_slice(s);
                }
            }
            let (v, d) = (&*v, &*d);
            // dU_ξ [co x ci] (+)= D_ξ [co x n] * V_ξ^T [n x ci].
            du.par_chunks_mut(gradient_stride(g)).enumerate().for_each(|(k, duk)| {
                let vt = layout.matrix(v, k, g.ci).transposed();
                matmul_strided(layout.matrix(d, k, g.co), vt, duk, g.ci, chunk > 0, Threads::Serial);
            });
        }
        untransform_kernels(g, du, dw);
    });
    sums
}

#[cfg(test)]
mod tests {
    use super::super::winograd_tests::{check_against_f64_loops, SHAPES};
    use super::{backward_weight, forward};

    #[test]
    fn forward_and_weight_gradient_match_f64_loops_at_any_size() {
        // 36 tiles an image: nine chunks of one image (a chunk holds about 64 tiles).
        let chunked = (9, 3, 5, (22, 22), (1, 1, 1, 1));
        let shapes: Vec<_> = SHAPES.iter().copied().chain([chunked]).collect();
        check_against_f64_loops(&shapes, forward, backward_weight);
    }
}
