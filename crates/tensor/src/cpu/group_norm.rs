//! Group normalisation on the CPU, optionally fused with SiLU:
//! `y = silu?((x - mean_g) * rstd_g * gamma_c + beta_c)` with biased group
//! variance, forward (saving each group's mean and 1/std) and backward.
//!
//! The data of one (image, group) pair is a contiguous slab of
//! `channels_per_group * hw` elements. Slabs run in parallel; every sum inside
//! a slab is serial, in f64, over fixed lanes combined in a fixed order, so
//! results are bit-identical for any thread count. dgamma/dbeta are reduced
//! over images from per-image partials, again in a fixed order.

// The branch-free exp of softmax, which lets the fused SiLU loops vectorise.
use super::attention::exp;
use super::dropout::{self, MaskArgs};
use super::simd::widest;
use crate::geom::GroupNormDims;
use crate::Element;
use rayon::prelude::*;

/// SiLU, z * sigmoid(z).
#[inline(always)]
fn silu<T: Element>(z: T) -> T {
    z / (T::one() + exp(-z))
}

/// d silu / dz = s (1 + z (1 - s)) with s = sigmoid(z).
#[inline(always)]
fn silu_grad<T: Element>(z: T) -> T {
    let s = T::one() / (T::one() + exp(-z));
    s * (T::one() + z * (T::one() - s))
}

/// Independent accumulators per sum: lets the loop vectorise while keeping a
/// fixed summation order.
const LANES: usize = 8;

/// Combines lane accumulators in a fixed pairwise order. The accumulators
/// pass through `black_box` so that the compiler vectorises the loop that
/// fills them as one 8-lane vector: seeing this pairing, it would build the
/// loop from 2-lane pieces and shuffles instead (3x slower, same bits).
#[inline(always)]
fn combine(acc: &[f64; LANES]) -> f64 {
    let acc = std::hint::black_box(*acc);
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// Sum of `f(x)` over `xs`, in f64.
#[inline(always)]
fn lane_sum<T: Element>(xs: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    // Fixed-size chunks: the lane loop unrolls into one vector add.
    let (chunks, rest) = xs.as_chunks::<LANES>();
    for ch in chunks {
        for (a, &x) in acc.iter_mut().zip(ch) {
            *a += f(x.to_f64());
        }
    }
    let tail: f64 = rest.iter().map(|&x| f(x.to_f64())).sum();
    combine(&acc) + tail
}

/// Mean and 1/sqrt(var + eps) of one slab, by two passes (the second sums
/// squared deviations, so a large mean does not cancel the variance away).
#[inline(always)]
fn slab_stats<T: Element>(x: &[T], eps: f64) -> (f64, f64) {
    let len = x.len() as f64;
    let mean = lane_sum(x, |v| v) / len;
    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / len;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Normalises one slab into `y` and returns its (mean, rstd). The sums are
/// in f64; the per-element map runs in `T` (as the CUDA kernel does) from the
/// statistics rounded to `T`, the values saved for the backward, so that
/// [`group_norm_apply`] recomputes `y` from them bit for bit.
#[inline(always)]
fn forward_slab<T: Element>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    hw: usize,
    eps: f64,
    fuse_silu: bool,
    y: &mut [T],
) -> (f64, f64) {
    let (mean, rstd) = slab_stats(x, eps);
    normalize_slab(x, gamma, beta, hw, T::from_f64(mean), T::from_f64(rstd), fuse_silu, y);
    (mean, rstd)
}

/// `y = silu?((x - mean) * (rstd * gamma_c) + beta_c)` over one slab, in `T`,
/// with `(x - mean)` formed first, so the only error a large mean adds is
/// the rounding of the mean itself to `T` (|mean| * 2^-24 in f32).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn normalize_slab<T: Element>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    hw: usize,
    m: T,
    rstd: T,
    fuse_silu: bool,
    y: &mut [T],
) {
    for ((xc, yc), (&g, &b)) in x.chunks_exact(hw).zip(y.chunks_exact_mut(hw)).zip(gamma.iter().zip(beta)) {
        let a = rstd * g;
        if fuse_silu {
            for (y, &x) in yc.iter_mut().zip(xc) {
                *y = silu((x - m) * a + b);
            }
        } else {
            for (y, &x) in yc.iter_mut().zip(xc) {
                *y = (x - m) * a + b;
            }
        }
    }
}

/// A dropout that runs in [`group_norm_apply`]'s pass, keeping its mask.
pub struct KeptDropout<'a> {
    pub mask: MaskArgs,
    /// The mask index of `y[0]`: a multiple of 64 (whole keep words per task).
    pub offset: u64,
    /// `dropout::keep_words(y.len())` words, written as
    /// `dropout::apply_mask_keeping_bits` writes them.
    pub keep: &'a mut [u64],
}

/// The forward's output from its saved statistics, bit for bit: what a
/// layer that does not keep its normalised output recomputes in the
/// backward (the U-Net's norms of each residual block on the CPU). With
/// `dropout`, the output is then masked in the same pass, bit for bit the
/// values of `dropout::apply_mask_keeping_bits` on it. The map runs over
/// fixed chunks of elements (not slabs: the statistics are known, and a
/// chunk of whole Philox blocks and keep words is masked where it lies in
/// cache).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_apply<T: Element>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    mean: &[T],
    rstd: &[T],
    d: GroupNormDims,
    fuse_silu: bool,
    dropout: Option<KeptDropout<'_>>,
    y: &mut [T],
) {
    const CHUNK: usize = dropout::CHUNK;
    let cpg = d.channels_per_group();
    if d.slab() == 0 {
        return;
    }
    let (mask, offset, keep) = match dropout {
        Some(k) => (Some(k.mask), k.offset, k.keep),
        None => (None, 0, &mut [][..]),
    };
    assert!(offset.is_multiple_of(64), "group_norm_apply: dropout offset {offset} is not on a keep word");
    let keep_chunk = if mask.is_some() { CHUNK / 64 } else { 0 };
    let keep_chunks = keep.chunks_mut(keep_chunk.max(1)).map(Some).chain(std::iter::repeat_with(|| None));
    let tasks: Vec<_> = y.chunks_mut(CHUNK).zip(x.chunks(CHUNK)).zip(keep_chunks).enumerate().collect();
    tasks.into_par_iter().for_each(|(ci, ((y, x), keep))| {
        widest(
            #[inline(always)]
            || {
                // One channel plane (or the part of it in this chunk) at a time.
                let mut i = ci * CHUNK;
                let (mut xs, mut ys) = (x, &mut y[..]);
                while !xs.is_empty() {
                    let plane = i / d.hw;
                    let len = ((plane + 1) * d.hw - i).min(xs.len());
                    let (c, n) = (plane % d.c, plane / d.c);
                    let s = n * d.groups + c / cpg;
                    let (xp, rest_x) = xs.split_at(len);
                    let (yp, rest_y) = std::mem::take(&mut ys).split_at_mut(len);
                    normalize_slab(xp, &gamma[c..c + 1], &beta[c..c + 1], len, mean[s], rstd[s], fuse_silu, yp);
                    (xs, ys, i) = (rest_x, rest_y, i + len);
                }
                if let Some(m) = mask {
                    dropout::mask_in_place(y, m, offset + (ci * CHUNK) as u64, keep);
                }
            },
        );
    });
}

/// Forward over all slabs. `gamma`, `beta` have `c` elements; `mean`, `rstd`
/// have `n * groups`. With `dropout` (mask arguments and the mask index of
/// `y[0]`), each slab is masked as soon as it is written, with the values of
/// `dropout::apply_mask_at` on the output.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_forward<T: Element>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    d: GroupNormDims,
    eps: f64,
    fuse_silu: bool,
    dropout: Option<(MaskArgs, u64)>,
    y: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
) {
    let (slab, cpg) = (d.slab(), d.channels_per_group());
    if slab == 0 {
        return;
    }
    y.par_chunks_mut(slab)
        .zip(x.par_chunks(slab))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .enumerate()
        .for_each(|(s, ((y, x), (m, r)))| {
            let c0 = (s % d.groups) * cpg;
            let (g, b) = (&gamma[c0..c0 + cpg], &beta[c0..c0 + cpg]);
            let (mu, rs) = widest(
                #[inline(always)]
                || {
                    let stats = forward_slab(x, g, b, d.hw, eps, fuse_silu, y);
                    if let Some((mask, offset)) = dropout {
                        dropout::mask_in_place(y, mask, offset + (s * slab) as u64, None);
                    }
                    stats
                },
            );
            *m = T::from_f64(mu);
            *r = T::from_f64(rs);
        });
}

/// Per-slab constants of the backward pass: the forward's statistics, in
/// f64 for the sums and in `T` for the per-element maps.
struct SlabStats<T> {
    mean: f64,
    rstd: f64,
    mean_t: T,
    rstd_t: T,
}

impl<T: Element> SlabStats<T> {
    fn new(mean: T, rstd: T) -> Self {
        SlabStats { mean: mean.to_f64(), rstd: rstd.to_f64(), mean_t: mean, rstd_t: rstd }
    }
}

/// A dropout whose backward comes before the norm's: dy is masked and
/// scaled as `dropout::apply_keep_bits` does before anything else uses it.
#[derive(Clone, Copy)]
pub struct DyKeep<'a> {
    /// The forward's keep bits, `dropout::keep_words(len)` words.
    pub keep: &'a [u64],
    pub p: f32,
}

/// Backward pass 1 on one slab: writes dz = dL/d(pre-activation) into `dx`
/// (recomputing the pre-SiLU value exactly as the forward did, when fused)
/// and returns per channel (sum dz * xhat, sum dz) into `pg`, `pb`. With
/// `keep` (the bits, their scale, and the mask index of the slab's first
/// element), each plane of dy is masked into `dx` first, in cache.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn slab_dz<T: Element>(
    dy: &[T],
    keep: Option<(&[u64], T, usize)>,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    st: &SlabStats<T>,
    hw: usize,
    fuse_silu: bool,
    dx: &mut [T],
    pg: &mut [f64],
    pb: &mut [f64],
) {
    let channels = dy.chunks_exact(hw).zip(x.chunks_exact(hw)).zip(dx.chunks_exact_mut(hw));
    for (j, ((dyc, xc), dzc)) in channels.enumerate() {
        let a = || (T::from_f64(st.rstd * gamma[j].to_f64()), beta[j]);
        match keep {
            Some((bits, scale, start)) => {
                dropout::apply_keep_bits_from(dyc, scale, bits, start + j * hw, dzc);
                if fuse_silu {
                    let (a, b) = a();
                    for (dz, &x) in dzc.iter_mut().zip(xc) {
                        *dz *= silu_grad((x - st.mean_t) * a + b);
                    }
                }
            }
            None if fuse_silu => {
                let (a, b) = a();
                for ((dz, &dy), &x) in dzc.iter_mut().zip(dyc).zip(xc) {
                    *dz = dy * silu_grad((x - st.mean_t) * a + b);
                }
            }
            None => dzc.copy_from_slice(dyc),
        }
        (pg[j], pb[j]) = dz_sums(dzc, xc, st);
    }
}

/// (sum dz * xhat, sum dz) over one channel, summed in f64. Kept apart from
/// the loop that writes dz so both loops stay simple enough to vectorise.
#[inline(always)]
fn dz_sums<T: Element>(dz: &[T], x: &[T], st: &SlabStats<T>) -> (f64, f64) {
    let (mut sg, mut sb) = ([0f64; LANES], [0f64; LANES]);
    for (dzs, xs) in dz.as_chunks::<LANES>().0.iter().zip(x.as_chunks::<LANES>().0) {
        for l in 0..LANES {
            let (dz, xhat) = (dzs[l].to_f64(), (xs[l].to_f64() - st.mean) * st.rstd);
            sg[l] += dz * xhat;
            sb[l] += dz;
        }
    }
    let tail = dz.len() - dz.len() % LANES;
    let (mut tg, mut tb) = (0.0, 0.0);
    for (&dz, &x) in dz[tail..].iter().zip(&x[tail..]) {
        tg += dz.to_f64() * ((x.to_f64() - st.mean) * st.rstd);
        tb += dz.to_f64();
    }
    (combine(&sg) + tg, combine(&sb) + tb)
}

/// Backward pass 2 on one slab: turns dz (in `dx`) into dx,
/// `dx = rstd * (gamma dz - mean(gamma dz) - xhat * mean(gamma dz xhat))`,
/// the slab's means in f64 and the per-element map in `T`, in this order so
/// that a group of one value gets exactly zero (gamma dz cancels itself).
/// With `residual` (this slab's part of it), dx is written as `dx + residual`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn slab_dx<T: Element>(
    x: &[T],
    gamma: &[T],
    st: &SlabStats<T>,
    hw: usize,
    pg: &[f64],
    pb: &[f64],
    residual: Option<&[T]>,
    dx: &mut [T],
) {
    let len = x.len() as f64;
    let mean_dxhat: f64 = gamma.iter().zip(pb).map(|(&g, &s)| g.to_f64() * s).sum::<f64>() / len;
    let mean_dxhat_xhat: f64 = gamma.iter().zip(pg).map(|(&g, &s)| g.to_f64() * s).sum::<f64>() / len;
    let (m_dxhat, m_dxhat_xhat) = (T::from_f64(mean_dxhat), T::from_f64(mean_dxhat_xhat));
    let dx_of = |d: T, x: T, g: T| {
        let xhat = (x - st.mean_t) * st.rstd_t;
        st.rstd_t * (g * d - m_dxhat - xhat * m_dxhat_xhat)
    };
    for (j, ((xc, dxc), &g)) in x.chunks_exact(hw).zip(dx.chunks_exact_mut(hw)).zip(gamma).enumerate() {
        match residual {
            Some(r) => {
                for ((d, &x), &r) in dxc.iter_mut().zip(xc).zip(&r[j * hw..(j + 1) * hw]) {
                    *d = dx_of(*d, x, g) + r;
                }
            }
            None => {
                for (d, &x) in dxc.iter_mut().zip(xc) {
                    *d = dx_of(*d, x, g);
                }
            }
        }
    }
}

/// What the backward folds into its pass besides the norm's own gradient.
#[derive(Clone, Copy)]
pub struct BackwardFusion<'a, T> {
    /// dy is the gradient of a dropout's output: the dropout's backward runs first.
    pub dy_keep: Option<DyKeep<'a>>,
    /// Added to dx as it is written (a residual branch's gradient, shaped like `x`),
    /// with the values of adding it afterwards.
    pub residual: Option<&'a [T]>,
}

impl<T> Default for BackwardFusion<'_, T> {
    fn default() -> Self {
        BackwardFusion { dy_keep: None, residual: None }
    }
}

/// Backward over all slabs: fills `dx` (like `x`), `dgamma`, `dbeta` (`c`).
/// `mean`, `rstd` are the forward's saved statistics. `fused` brings a
/// dropout backward before and a residual add after into the same pass,
/// bit for bit the values of the separate ops.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward<T: Element>(
    dy: &[T],
    fused: BackwardFusion<'_, T>,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    mean: &[T],
    rstd: &[T],
    d: GroupNormDims,
    fuse_silu: bool,
    dx: &mut [T],
    dgamma: &mut [T],
    dbeta: &mut [T],
) {
    let (slab, cpg) = (d.slab(), d.channels_per_group());
    // Per-(image, channel) partial sums; slab s owns entries [s*cpg, (s+1)*cpg).
    let mut pg = vec![0f64; d.n * d.c];
    let mut pb = vec![0f64; d.n * d.c];
    if slab > 0 {
        dx.par_chunks_mut(slab)
            .zip(dy.par_chunks(slab).zip(x.par_chunks(slab)))
            .zip(pg.par_chunks_mut(cpg).zip(pb.par_chunks_mut(cpg)))
            .enumerate()
            .for_each(|(s, ((dx, (dy, x)), (pg, pb)))| {
                let c0 = (s % d.groups) * cpg;
                let (g, b) = (&gamma[c0..c0 + cpg], &beta[c0..c0 + cpg]);
                let st = SlabStats::new(mean[s], rstd[s]);
                let keep = fused.dy_keep.map(|k| (k.keep, dropout::keep_scale(k.p), s * slab));
                let residual = fused.residual.map(|r| &r[s * slab..(s + 1) * slab]);
                widest(
                    #[inline(always)]
                    || {
                        slab_dz(dy, keep, x, g, b, &st, d.hw, fuse_silu, dx, pg, pb);
                        slab_dx(x, g, &st, d.hw, pg, pb, residual, dx);
                    },
                );
            });
    }
    reduce_over_images(&pg, d, dgamma);
    reduce_over_images(&pb, d, dbeta);
}

/// `out[c] = sum_n partial[n, c]`, summed in image order.
fn reduce_over_images<T: Element>(partial: &[f64], d: GroupNormDims, out: &mut [T]) {
    for (c, o) in out.iter_mut().enumerate().take(d.c) {
        *o = T::from_f64((0..d.n).map(|n| partial[n * d.c + c]).sum());
    }
}
