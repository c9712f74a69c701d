//! 2-D convolution on the CPU (NCHW, cross-correlation, zero padding): the
//! reference twin of `ops/conv2d.rs`, tested by `crates/tensor/tests/conv2d.rs`
//! and benchmarked by `benches/ops/conv2d.rs`.
//!
//! Every product is a gemm (`cpu::gemm`) on an im2col matrix. For a group of
//! `nb` images, `col[(c, i, j), (img, oy, ox)] = x[img, c, oy*s + i - pad_top,
//! ox*s + j - pad_left]` (zero outside the input) is `K x nb*P`, with
//! `K = Ci*KH*KW` and `P = Ho*Wo`. Then
//! - forward:         `y = W [Co x K] * col` (+ bias);
//! - backward data:   stride 1: the forward conv of dy with the flipped,
//!   transposed kernel; otherwise `dcol = W^T * dY`, scattered back by col2im;
//! - backward weight: `dW = dY * col^T` (computed as `dW^T` when `K >= Co`),
//!   summed over images.
//!
//! The f32 3x3 stride-1 convs with 16 or more channels each way go through
//! Winograd instead, forward (and so the stride-1 data gradient) and weight
//! gradient alike: F(4x4, 3x3) from 128 channels each way and 384 both
//! together (`conv2d/winograd_2d.rs`: 36 gemms over the tiles with a Ci inner
//! dimension, 4x fewer multiplies), else F(4, 3) down the columns
//! (`conv2d/winograd_1d.rs`: 6 gemms with a 3 Ci inner dimension, 2x
//! fewer). The first and last convs (1-3 channels) stay direct.
//!
//! Small planes share one gemm so its N dimension stays large. Work is
//! parallel over image groups, each gemm serial inside; the weight gradient
//! sums per-slot partials (a fixed slot count) in slot order (the 2-D
//! Winograd form accumulates per point over chunks in order instead), and the
//! bias gradient sums per channel, so every result is bit-identical for any
//! rayon thread count.

use super::gemm::{matmul, MatRef, Threads};
use super::simd::widest;
use crate::geom::ConvGeom;
use crate::Element;
use rayon::prelude::*;
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::ops::Range;

#[macro_use]
mod blocks;
mod f43;
mod winograd_1d;
mod winograd_2d;
#[cfg(test)]
mod winograd_tests;

/// Columns one gemm should see. Small planes (the 7x7 of a downsampling
/// conv) are batched up to this; larger ones go one image per gemm, which
/// keeps the im2col in L2 (measured on Zen 4: wider gemms gain nothing).
const TARGET_COLS: usize = 256;

/// Most partial weight gradients alive at once (a fixed number, never the
/// thread count, so the summation order is the same on every machine).
const MAX_WEIGHT_SLOTS: usize = 16;

impl ConvGeom {
    fn in_image(&self) -> usize {
        self.ci * self.h * self.w
    }

    fn out_image(&self) -> usize {
        self.co * self.p()
    }

    /// A 1x1, stride-1, unpadded conv: the input itself is the im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == 1
            && self.pad_top == 0
            && self.pad_left == 0
            && self.ho == self.h
            && self.wo == self.w
    }

    /// Images per gemm: about `TARGET_COLS` columns.
    fn images_per_group(&self) -> usize {
        images_per_group(self.n, self.p(), TARGET_COLS)
    }

    /// For stride 1 with padding inside the kernel: the conv whose forward is
    /// this conv's data gradient (dy in, dx out, padding `k - 1 - pad`).
    fn transposed(&self) -> Option<ConvGeom> {
        if self.stride != 1 {
            return None;
        }
        // Stride 1 gives ho = h + pad_top + pad_bottom - kh + 1 exactly.
        let pad_bottom = (self.ho + self.kh - 1).checked_sub(self.h + self.pad_top)?;
        let pad_right = (self.wo + self.kw - 1).checked_sub(self.w + self.pad_left)?;
        let inside = self.pad_top.max(pad_bottom) < self.kh && self.pad_left.max(pad_right) < self.kw;
        inside.then(|| ConvGeom {
            ci: self.co,
            h: self.ho,
            w: self.wo,
            co: self.ci,
            pad_top: self.kh - 1 - self.pad_top,
            pad_left: self.kw - 1 - self.pad_left,
            ho: self.h,
            wo: self.w,
            ..*self
        })
    }
}

/// Images per group of a batch of `n`: about `target` units of work at
/// `per_image` each, the batch split into equal groups (the shape decides,
/// never the thread count).
fn images_per_group(n: usize, per_image: usize, target: usize) -> usize {
    let want = (target / per_image.max(1)).clamp(1, n.max(1));
    let groups = n.div_ceil(want).max(1);
    n.div_ceil(groups).max(1)
}

/// The images of each weight-gradient slot: contiguous runs of whole groups
/// of `nb`, at most `max_slots` runs (a fixed number, so the slots' sum has
/// the same order on every machine).
fn weight_slots(n: usize, nb: usize, max_slots: usize) -> Vec<Range<usize>> {
    let per_slot = n.div_ceil(nb).div_ceil(max_slots) * nb;
    (0..n.div_ceil(per_slot)).map(|s| s * per_slot..((s + 1) * per_slot).min(n)).collect()
}

// ---------------------------------------------------------------- scratch

thread_local! {
    static SCRATCH_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
    static PARTIALS_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PARTIALS_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

type Cell<U> = std::thread::LocalKey<RefCell<Vec<U>>>;

/// Runs `f` on a per-thread buffer of `len` elements that is kept between
/// calls (it only grows: each thread holds the largest im2col it has seen),
/// so the hot loops neither allocate nor fault in fresh pages. The contents
/// are garbage: callers overwrite what they read.
fn with_scratch<T: Element, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    with_buffer(&SCRATCH_F32, &SCRATCH_F64, len, f)
}

/// [`with_scratch`] for what the calling thread holds while the workers use
/// their own scratch: the weight gradients' per-slot partials (each slot's
/// first product overwrites its partial, so garbage is fine here too), and
/// the 2-D Winograd path's transformed kernels and chunk buffers (each pass
/// writes what the next reads).
fn with_partials<T: Element, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    with_buffer(&PARTIALS_F32, &PARTIALS_F64, len, f)
}

fn with_buffer<T: Element, R>(
    f32s: &'static Cell<f32>,
    f64s: &'static Cell<f64>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    fn run<U: Element, T: Element, R>(cell: &RefCell<Vec<U>>, len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
        // Busy only if a nested rayon job re-entered this thread: fall back.
        let Ok(mut guard) = cell.try_borrow_mut() else {
            return f(&mut vec![T::zero(); len]);
        };
        match (&mut *guard as &mut dyn Any).downcast_mut::<Vec<T>>() {
            Some(v) => {
                if v.len() < len {
                    v.resize(len, T::zero());
                }
                f(&mut v[..len])
            }
            None => f(&mut vec![T::zero(); len]),
        }
    }
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        f32s.with(|c| run::<f32, T, R>(c, len, f))
    } else {
        f64s.with(|c| run::<f64, T, R>(c, len, f))
    }
}

// ---------------------------------------------------------- im2col / col2im

/// Where each kernel tap reads. A stride-`s` conv reads, through kernel row
/// `i`, input rows `oy*s + i - pad_top`: all in one phase `(i - pad_top) mod s`
/// of the rows, shifted by `floor((i - pad_top) / s)`. So every tap is a
/// shifted copy of one phase plane (the plane itself when `s = 1`), and
/// shifted copies are plain memcpys.
struct TapMap {
    s: usize,
    /// Per kernel row: (phase row, shift); per kernel column likewise.
    rows: Vec<(usize, isize)>,
    cols: Vec<(usize, isize)>,
    /// Per phase `r * s + t`: (offset in the phase buffer, height, width).
    phases: Vec<(usize, usize, usize)>,
}

impl TapMap {
    fn new(g: &ConvGeom) -> Self {
        let s = g.stride;
        let split = |k: usize, pad: usize| {
            let d = k as isize - pad as isize;
            (d.rem_euclid(s as isize) as usize, d.div_euclid(s as isize))
        };
        let mut phases = Vec::with_capacity(s * s);
        let mut off = 0;
        for r in 0..s {
            for t in 0..s {
                let (ph, pw) = (g.h.saturating_sub(r).div_ceil(s), g.w.saturating_sub(t).div_ceil(s));
                phases.push((off, ph, pw));
                off += ph * pw;
            }
        }
        TapMap {
            s,
            rows: (0..g.kh).map(|i| split(i, g.pad_top)).collect(),
            cols: (0..g.kw).map(|j| split(j, g.pad_left)).collect(),
            phases,
        }
    }

    /// The phase plane tap `(i, j)` reads, as (offset, height, width), and its shift.
    fn tap(&self, i: usize, j: usize) -> ((usize, usize, usize), isize, isize) {
        let ((r, qi), (t, qj)) = (self.rows[i], self.cols[j]);
        (self.phases[r * self.s + t], qi, qj)
    }

    /// `phases[(r, t)][a, b] = plane[a*s + r, b*s + t]` (stride > 1 only).
    fn split<T: Element>(&self, plane: &[T], w: usize, phases: &mut [T]) {
        for (idx, &(off, ph, pw)) in self.phases.iter().enumerate() {
            let (r, t) = (idx / self.s, idx % self.s);
            if pw == 0 {
                continue;
            }
            for a in 0..ph {
                let src = plane[(a * self.s + r) * w + t..].iter().step_by(self.s);
                phases[off + a * pw..][..pw].iter_mut().zip(src).for_each(|(d, &v)| *d = v);
            }
        }
    }

    /// The inverse of `split`: `plane[a*s + r, b*s + t] = phases[(r, t)][a, b]`.
    fn merge<T: Element>(&self, phases: &[T], w: usize, plane: &mut [T]) {
        for (idx, &(off, ph, pw)) in self.phases.iter().enumerate() {
            let (r, t) = (idx / self.s, idx % self.s);
            if pw == 0 {
                continue;
            }
            for a in 0..ph {
                let dst = plane[(a * self.s + r) * w + t..].iter_mut().step_by(self.s);
                dst.zip(&phases[off + a * pw..][..pw]).for_each(|(d, &v)| *d = v);
            }
        }
    }
}

/// The output positions `o < out_len` with `0 <= o + shift < len`.
fn shifted_range(shift: isize, len: usize, out_len: usize) -> Range<usize> {
    let lo = (-shift).clamp(0, out_len as isize) as usize;
    let hi = (len as isize - shift).clamp(lo as isize, out_len as isize) as usize;
    lo..hi
}

/// Fills `col` (`K x nb*P`, row-major) from the `nb` images in `x`.
fn im2col<T: Element>(g: &ConvGeom, x: &[T], nb: usize, col: &mut [T]) {
    let (p, cols, plane) = (g.p(), nb * g.p(), g.h * g.w);
    let map = TapMap::new(g);
    let mut phases = vec![T::zero(); if g.stride > 1 { plane } else { 0 }];
    for img in 0..nb {
        for c in 0..g.ci {
            let mut src = &x[(img * g.ci + c) * plane..][..plane];
            if g.stride > 1 {
                map.split(src, g.w, &mut phases);
                src = &phases;
            }
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let row = (c * g.kh + i) * g.kw + j;
                    let ((off, ph, pw), qi, qj) = map.tap(i, j);
                    let dst = &mut col[row * cols + img * p..][..p];
                    gather_shifted(&src[off..off + ph * pw], (ph, pw), qi, qj, (g.ho, g.wo), dst);
                }
            }
        }
    }
}

/// `dst[oy, ox] = src[oy + qi, ox + qj]` for `dst` of size `ho x wo` and
/// `src` of size `sh x sw`, 0 where that falls outside `src`.
fn gather_shifted<T: Element>(
    src: &[T],
    (sh, sw): (usize, usize),
    qi: isize,
    qj: isize,
    (ho, wo): (usize, usize),
    dst: &mut [T],
) {
    let (rows, xs) = (shifted_range(qi, sh, ho), shifted_range(qj, sw, wo));
    if rows.is_empty() || xs.is_empty() {
        // This tap only ever sees padding.
        dst.fill(T::zero());
        return;
    }
    dst[..rows.start * wo].fill(T::zero());
    dst[rows.end * wo..].fill(T::zero());
    let at = |oy: usize, ox: usize| ((oy as isize + qi) as usize) * sw + (ox as isize + qj) as usize;
    if sw == wo {
        // Rows are equally long, so output q reads input q + const: one copy
        // over all valid rows, then zero the columns that wrapped a row edge.
        let (q0, q1) = (rows.start * wo + xs.start, (rows.end - 1) * wo + xs.end);
        let s0 = at(rows.start, xs.start);
        dst[q0..q1].copy_from_slice(&src[s0..s0 + (q1 - q0)]);
    } else {
        for oy in rows.clone() {
            let s0 = at(oy, xs.start);
            dst[oy * wo + xs.start..][..xs.len()].copy_from_slice(&src[s0..s0 + xs.len()]);
        }
    }
    for oy in rows {
        let row = &mut dst[oy * wo..][..wo];
        zero_few(&mut row[..xs.start]);
        zero_few(&mut row[xs.end..]);
    }
}

/// Zeroes a slice of a few elements (a row's padding columns: at most the
/// kernel width) with plain stores; `fill` would call memset once per row.
#[inline(always)]
fn zero_few<T: Element>(v: &mut [T]) {
    for x in v.iter_mut() {
        // Opaque to the loop-idiom pass, which would turn this loop into memset.
        *x = std::hint::black_box(T::zero());
    }
}

/// The adjoint of `im2col`: overwrites the `nb` images in `dx` with the
/// sums of their entries of `dcol`.
fn col2im<T: Element>(g: &ConvGeom, dcol: &[T], nb: usize, dx: &mut [T]) {
    let (p, cols, plane) = (g.p(), nb * g.p(), g.h * g.w);
    let map = TapMap::new(g);
    let mut phases = vec![T::zero(); if g.stride > 1 { plane } else { 0 }];
    for img in 0..nb {
        for c in 0..g.ci {
            let out = &mut dx[(img * g.ci + c) * plane..][..plane];
            let acc: &mut [T] = if g.stride > 1 { &mut phases } else { out };
            acc.fill(T::zero());
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let row = (c * g.kh + i) * g.kw + j;
                    let ((off, ph, pw), qi, qj) = map.tap(i, j);
                    let src = &dcol[row * cols + img * p..][..p];
                    scatter_shifted(src, (g.ho, g.wo), qi, qj, (ph, pw), &mut acc[off..off + ph * pw]);
                }
            }
            if g.stride > 1 {
                map.merge(&phases, g.w, &mut dx[(img * g.ci + c) * plane..][..plane]);
            }
        }
    }
}

/// The adjoint of `gather_shifted`: `dst[oy + qi, ox + qj] += src[oy, ox]` inside `dst`.
fn scatter_shifted<T: Element>(
    src: &[T],
    (ho, wo): (usize, usize),
    qi: isize,
    qj: isize,
    (sh, sw): (usize, usize),
    dst: &mut [T],
) {
    let (rows, xs) = (shifted_range(qi, sh, ho), shifted_range(qj, sw, wo));
    if rows.is_empty() || xs.is_empty() {
        // This tap only ever saw padding: nothing flows back.
        return;
    }
    for oy in rows {
        let d0 = ((oy as isize + qi) as usize) * sw + (xs.start as isize + qj) as usize;
        let d = &mut dst[d0..d0 + xs.len()];
        d.iter_mut().zip(&src[oy * wo + xs.start..][..xs.len()]).for_each(|(d, &v)| *d += v);
    }
}

/// Copies `nb` images of `[C, P]` (NCHW) into one `[C, nb*P]` matrix.
fn images_to_matrix<T: Element>(src: &[T], c: usize, p: usize, nb: usize, dst: &mut [T]) {
    for img in 0..nb {
        for ch in 0..c {
            dst[ch * nb * p + img * p..][..p].copy_from_slice(&src[(img * c + ch) * p..][..p]);
        }
    }
}

/// The inverse of `images_to_matrix`.
fn matrix_to_images<T: Element>(src: &[T], c: usize, p: usize, nb: usize, dst: &mut [T]) {
    for img in 0..nb {
        for ch in 0..c {
            dst[(img * c + ch) * p..][..p].copy_from_slice(&src[ch * nb * p + img * p..][..p]);
        }
    }
}

/// What the forward adds to the product, per output plane, in this order:
/// `y = ((conv + bias[c]) + sample_bias[n, c]) + residual[n, c, :, :]`. The
/// same order as the separate ops (`add_channel_bias`, then `add`), so fusing
/// them changes no bit; here each image is finished while it is in cache.
#[derive(Clone, Copy)]
pub struct Epilogue<'a, T> {
    /// `[Co]`.
    pub bias: Option<&'a [T]>,
    /// `[N, Co]`: one value per image and channel (a time-embedding projection).
    pub sample_bias: Option<&'a [T]>,
    /// `[N, Co, Ho, Wo]`: a residual connection.
    pub residual: Option<&'a [T]>,
}

impl<'a, T: Element> Epilogue<'a, T> {
    pub fn bias(bias: Option<&'a [T]>) -> Self {
        Epilogue { bias, sample_bias: None, residual: None }
    }

    fn is_empty(&self) -> bool {
        self.bias.is_none() && self.sample_bias.is_none() && self.residual.is_none()
    }

    /// Applies the adds to the images `first..first + y.len() / (co * p)`.
    fn apply(&self, g: &ConvGeom, first: usize, y: &mut [T]) {
        if self.is_empty() {
            return;
        }
        let (co, p) = (g.co, g.p());
        for (i, plane) in y.chunks_exact_mut(p).enumerate() {
            self.apply_plane(g, first + i / co, i % co, plane);
        }
    }

    /// Applies the adds to the plane of image `img`, channel `ch`.
    fn apply_plane(&self, g: &ConvGeom, img: usize, ch: usize, plane: &mut [T]) {
        let (co, p) = (g.co, g.p());
        let sb = self.sample_bias.map(|s| s[img * co + ch]);
        match (self.bias.map(|b| b[ch]), sb) {
            (Some(b), Some(s)) => plane.iter_mut().for_each(|v| *v = (*v + b) + s),
            (Some(b), None) => plane.iter_mut().for_each(|v| *v += b),
            (None, Some(s)) => plane.iter_mut().for_each(|v| *v += s),
            (None, None) => {}
        }
        if let Some(r) = self.residual {
            plane.iter_mut().zip(&r[(img * co + ch) * p..][..p]).for_each(|(v, &r)| *v += r);
        }
    }
}

// ------------------------------------------------------------------ forward

/// `y [N, Co, Ho, Wo] = conv(x [N, Ci, H, W], w [Co, Ci, KH, KW]) + bias [Co]`.
pub fn conv2d_forward<T: Element>(g: &ConvGeom, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T]) {
    conv2d_forward_epilogue(g, x, w, &Epilogue::bias(bias), y)
}

/// `y = conv(x, w)` finished by `epi` (see [`Epilogue`]).
pub fn conv2d_forward_epilogue<T: Element>(g: &ConvGeom, x: &[T], w: &[T], epi: &Epilogue<'_, T>, y: &mut [T]) {
    if winograd_2d::applies::<T>(g) {
        return winograd_2d::forward(g, x, w, epi, y);
    }
    if winograd_1d::applies::<T>(g) {
        return winograd_1d::forward(g, x, w, epi, y);
    }
    let (nb, xi, yi) = (g.images_per_group(), g.in_image(), g.out_image());
    if yi == 0 || g.n == 0 {
        return;
    }
    y[..g.n * yi].par_chunks_mut(nb * yi).enumerate().for_each(|(grp, y)| {
        let cnt = y.len() / yi;
        forward_group(g, &x[grp * nb * xi..][..cnt * xi], w, y, cnt);
        epi.apply(g, grp * nb, y);
    });
}

/// `y = W [Co x K] * col [K x nb*P]` for one group of images.
fn forward_group<T: Element>(g: &ConvGeom, x: &[T], w: &[T], y: &mut [T], nb: usize) {
    let (k, p, cols) = (g.k(), g.p(), nb * g.p());
    let wm = MatRef::row_major(w, g.co, k);
    if nb == 1 && g.is_pointwise() {
        return matmul(wm, MatRef::row_major(x, k, p), y, false, Threads::Serial);
    }
    let out_len = if nb == 1 { 0 } else { g.co * cols };
    with_scratch::<T, _>(k * cols + out_len, |buf| {
        let (col, out) = buf.split_at_mut(k * cols);
        im2col(g, x, nb, col);
        let col = MatRef::row_major(col, k, cols);
        if nb == 1 {
            // One image: the gemm output already is the NCHW image.
            matmul(wm, col, y, false, Threads::Serial);
        } else {
            matmul(wm, col, out, false, Threads::Serial);
            matrix_to_images(out, g.co, p, nb, y);
        }
    });
}

// ------------------------------------------------------------ backward data

/// `dx [N, Ci, H, W]` from `dy [N, Co, Ho, Wo]` and `w`. Stride 1: a forward
/// conv of dy with the flipped, transposed kernel (the fastest path); else
/// `W^T dY` then col2im.
pub fn conv2d_backward_data<T: Element>(g: &ConvGeom, dy: &[T], w: &[T], dx: &mut [T]) {
    if let Some(gt) = g.transposed() {
        let wt = flip_transpose(g, w);
        return conv2d_forward(&gt, dy, &wt, None, dx);
    }
    let (nb, xi, yi) = (g.images_per_group(), g.in_image(), g.out_image());
    if xi == 0 || g.n == 0 {
        return;
    }
    dx[..g.n * xi].par_chunks_mut(nb * xi).enumerate().for_each(|(grp, dx)| {
        let cnt = dx.len() / xi;
        backward_data_group(g, &dy[grp * nb * yi..][..cnt * yi], w, dx, cnt);
    });
}

/// `w'[c, o, i, j] = w[o, c, KH-1-i, KW-1-j]`: the kernel of the transposed conv.
fn flip_transpose<T: Element>(g: &ConvGeom, w: &[T]) -> Vec<T> {
    let taps = g.kh * g.kw;
    let mut wt = vec![T::zero(); g.co * g.k()];
    for o in 0..g.co {
        for c in 0..g.ci {
            let src = &w[(o * g.ci + c) * taps..][..taps];
            let dst = &mut wt[(c * g.co + o) * taps..][..taps];
            dst.iter_mut().zip(src.iter().rev()).for_each(|(d, &v)| *d = v);
        }
    }
    wt
}

/// `dx = col2im(W^T [K x Co] * dY [Co x nb*P])` for one group of images.
fn backward_data_group<T: Element>(g: &ConvGeom, dy: &[T], w: &[T], dx: &mut [T], nb: usize) {
    let (k, p, cols) = (g.k(), g.p(), nb * g.p());
    let wt = MatRef::row_major_t(w, g.co, k);
    let dyb_len = if nb == 1 { 0 } else { g.co * cols };
    with_scratch::<T, _>(k * cols + dyb_len, |buf| {
        let (dcol, dyb) = buf.split_at_mut(k * cols);
        let dym = if nb == 1 {
            MatRef::row_major(dy, g.co, cols)
        } else {
            images_to_matrix(dy, g.co, p, nb, dyb);
            MatRef::row_major(&*dyb, g.co, cols)
        };
        matmul(wt, dym, dcol, false, Threads::Serial);
        col2im(g, dcol, nb, dx);
    });
}

// ---------------------------------------------------------- backward weight

/// `dw [Co, Ci, KH, KW] = sum over images of dY col^T`. Images are split into
/// at most `MAX_WEIGHT_SLOTS` contiguous slots; each slot accumulates its
/// images in order, and the slots are summed in slot order.
pub fn conv2d_backward_weight<T: Element>(g: &ConvGeom, dy: &[T], x: &[T], dw: &mut [T]) {
    if winograd_2d::applies::<T>(g) {
        winograd_2d::backward_weight(g, dy, x, dw, false);
        return;
    }
    if winograd_1d::applies::<T>(g) {
        winograd_1d::backward_weight(g, dy, x, dw, false);
        return;
    }
    let wlen = g.co * g.k();
    dw[..wlen].fill(T::zero());
    if g.n == 0 || wlen == 0 {
        return;
    }
    let nb = g.images_per_group();
    let slots = weight_slots(g.n, nb, MAX_WEIGHT_SLOTS);
    with_partials(slots.len() * wlen, |partials: &mut [T]| {
        partials.par_chunks_mut(wlen).zip(slots).for_each(|(part, imgs)| weight_slot(g, dy, x, imgs, nb, part));
        if g.weight_transposed() {
            let mut sum = vec![T::zero(); wlen];
            sum_partials(partials, wlen, &mut sum);
            transpose(&sum, g.k(), g.co, dw);
        } else {
            sum_partials(partials, wlen, dw);
        }
    });
}

impl ConvGeom {
    /// Whether partial weight gradients are kept as `dW^T [K, Co]`: the gemm
    /// is fastest with the longer side as its M (measured on AVX2/AVX-512).
    fn weight_transposed(&self) -> bool {
        self.k() >= self.co
    }
}

/// `dst [cols x rows] = src [rows x cols]^T`.
fn transpose<T: Element>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    for (r, row) in src.chunks_exact(cols).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            dst[c * rows + r] = v;
        }
    }
}

/// Accumulates the weight gradient of the images `imgs` into `part`, `nb`
/// images per gemm.
fn weight_slot<T: Element>(g: &ConvGeom, dy: &[T], x: &[T], imgs: Range<usize>, nb: usize, part: &mut [T]) {
    let mut start = imgs.start;
    while start < imgs.end {
        let cnt = nb.min(imgs.end - start);
        let dy = &dy[start * g.out_image()..][..cnt * g.out_image()];
        let x = &x[start * g.in_image()..][..cnt * g.in_image()];
        weight_group(g, dy, x, cnt, part, start > imgs.start);
        start += cnt;
    }
}

/// `part (+)= dY [Co, nb*P] * col^T [nb*P, K]` (or its transpose) for one
/// group of images.
fn weight_group<T: Element>(g: &ConvGeom, dy: &[T], x: &[T], nb: usize, part: &mut [T], acc: bool) {
    let (k, p, cols) = (g.k(), g.p(), nb * g.p());
    let product = |col: &[T], dy: &[T], part: &mut [T]| {
        if g.weight_transposed() {
            matmul(MatRef::row_major(col, k, cols), MatRef::row_major_t(dy, g.co, cols), part, acc, Threads::Serial);
        } else {
            matmul(MatRef::row_major(dy, g.co, cols), MatRef::row_major_t(col, k, cols), part, acc, Threads::Serial);
        }
    };
    if nb == 1 && g.is_pointwise() {
        return product(x, dy, part);
    }
    let dyb_len = if nb == 1 { 0 } else { g.co * cols };
    with_scratch::<T, _>(k * cols + dyb_len, |buf| {
        let (col, dyb) = buf.split_at_mut(k * cols);
        im2col(g, x, nb, col);
        if nb == 1 {
            product(col, dy, part);
        } else {
            images_to_matrix(dy, g.co, p, nb, dyb);
            product(col, dyb, part);
        }
    });
}

/// `out[e] = sum over slots s, in order, of partials[s * len + e]`.
fn sum_partials<T: Element>(partials: &[T], len: usize, out: &mut [T]) {
    out[..len].par_chunks_mut(super::REDUCE_CHUNK).enumerate().for_each(|(ci, out)| {
        let base = ci * super::REDUCE_CHUNK;
        for part in partials.chunks_exact(len) {
            out.iter_mut().zip(&part[base..]).for_each(|(o, &v)| *o += v);
        }
    });
}

// ------------------------------------------------------------ backward bias

/// [`conv2d_backward_weight`] and [`conv2d_backward_bias`] together. The
/// Winograd paths sum each dy plane while their dy transform has it in cache,
/// so dy is read from memory once instead of twice; the sums and their order
/// are `conv2d_backward_bias`'s, so `db` is bit-identical to it.
pub fn conv2d_backward_weight_and_bias<T: Element>(g: &ConvGeom, dy: &[T], x: &[T], dw: &mut [T], db: &mut [T]) {
    let sums = if winograd_2d::applies::<T>(g) {
        winograd_2d::backward_weight(g, dy, x, dw, true)
    } else if winograd_1d::applies::<T>(g) {
        winograd_1d::backward_weight(g, dy, x, dw, true)
    } else {
        conv2d_backward_weight(g, dy, x, dw);
        return conv2d_backward_bias(g.n, g.co, g.p(), dy, db);
    };
    // `sums[o * n + img]`: each path fills them all when asked
    debug_assert_eq!(sums.len(), g.n * g.co);
    db[..g.co].iter_mut().enumerate().for_each(|(o, db)| {
        let acc: f64 = sums[o * g.n..][..g.n].iter().sum();
        *db = <T as Element>::from_f64(acc);
    });
}

/// Each dy plane's [`sum_f64`], in memory order (`[img][o]` for `cnt * co`
/// planes of `p`): the bias gradient's terms.
#[inline(always)]
fn plane_sums<T: Element>(dy: &[T], planes: usize, p: usize) -> Vec<f64> {
    if p == 0 {
        return vec![0.0; planes];
    }
    dy[..planes * p].chunks_exact(p).map(sum_f64).collect()
}

/// `sums[o * n + img]`, the layout `conv2d_backward_weight_and_bias` reads,
/// from sums in `[img][o]` order.
fn by_channel(sums: &[f64], n: usize, co: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * co];
    for (img, row) in sums.chunks_exact(co.max(1)).enumerate().take(n) {
        for (o, &v) in row.iter().enumerate() {
            out[o * n + img] = v;
        }
    }
    out
}

/// `db[o] = sum over images and pixels of dy[img, o, :]`, accumulated in f64
/// per channel in image order (parallel over channels only).
pub fn conv2d_backward_bias<T: Element>(n: usize, co: usize, p: usize, dy: &[T], db: &mut [T]) {
    db[..co].par_iter_mut().enumerate().for_each(|(o, db)| {
        let acc: f64 = widest(
            #[inline(always)]
            || (0..n).map(|img| sum_f64(&dy[(img * co + o) * p..][..p])).sum(),
        );
        *db = <T as Element>::from_f64(acc);
    });
}

/// The sum of `v` in f64, over 8 interleaved lanes added in a fixed order
/// (one running sum would wait on every add's latency). The lanes pass
/// through `black_box` before they are combined so that the compiler keeps
/// the loop one 8-lane vector add (see `cpu/group_norm.rs`).
#[inline(always)]
pub(super) fn sum_f64<T: Element>(v: &[T]) -> f64 {
    let mut lanes = [0f64; 8];
    let (chunks, rest) = v.as_chunks::<8>();
    let tail: f64 = rest.iter().map(|&x| Element::to_f64(x)).sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, &x)| *l += Element::to_f64(x));
    }
    std::hint::black_box(lanes).iter().sum::<f64>() + tail
}
