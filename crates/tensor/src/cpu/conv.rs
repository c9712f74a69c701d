//! 2-D convolution on the CPU (NCHW, cross-correlation, zero padding): the
//! reference twin of `ops/conv.rs`, tested by `crates/tensor/tests/conv.rs`.
//!
//! Every product is a gemm on an im2col matrix. For a group of `nb` images,
//! `col[(c, i, j), (img, oy, ox)] = x[img, c, oy*s + i - pad_top, ox*s + j - pad_left]`
//! (zero outside the input), a `K x nb*P` matrix with `K = Ci*KH*KW` and
//! `P = Ho*Wo`. Then
//! - forward:         `y = W [Co x K] * col` (+ bias),
//! - backward data:   `dcol = W^T * dY`, scattered back by col2im,
//! - backward weight: `dW = dY * col^T`, summed over images.
//!
//! Several images share one gemm so its N dimension is large enough to keep
//! the kernels busy. Work is parallel over image groups (each gemm runs
//! serially inside); the weight gradient sums per-slot partials in a fixed
//! order, so every result is bit-identical for any rayon thread count.

use super::gemm::{matmul, MatRef, Threads};
use crate::Element;
use rayon::prelude::*;
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::ops::Range;

/// The sizes of one convolution, checked by `ops::conv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub ho: usize,
    pub wo: usize,
}

/// Columns one gemm should see: enough for the gemm kernels to reach full
/// speed, small enough that a group's im2col stays in L2/L3.
const TARGET_COLS: usize = 768;

/// Most partial weight gradients alive at once (a fixed number, never the
/// thread count, so the summation order is the same on every machine).
const MAX_WEIGHT_SLOTS: usize = 16;

impl ConvGeom {
    /// Rows of the im2col matrix: one per (input channel, kernel tap).
    pub fn k(&self) -> usize {
        self.ci * self.kh * self.kw
    }

    /// Output pixels per image (columns of the im2col matrix per image).
    pub fn p(&self) -> usize {
        self.ho * self.wo
    }

    fn in_image(&self) -> usize {
        self.ci * self.h * self.w
    }

    fn out_image(&self) -> usize {
        self.co * self.p()
    }

    /// A 1x1, stride-1, unpadded conv: the input itself is the im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad_top == 0 && self.pad_left == 0
            && self.ho == self.h && self.wo == self.w
    }

    /// Images per gemm: about `TARGET_COLS` columns, with the batch split
    /// into equal groups (depends on the shape only, never on threads).
    fn images_per_group(&self) -> usize {
        let tc = std::env::var("CONV_TC").ok().and_then(|v| v.parse().ok()).unwrap_or(TARGET_COLS); // TUNING-TMP
        let want = (tc / self.p().max(1)).clamp(1, self.n.max(1));
        let groups = self.n.div_ceil(want).max(1);
        self.n.div_ceil(groups).max(1)
    }

    /// The output positions `o` (along one axis) whose input index
    /// `o*stride + tap - pad` lies in `0..len`.
    fn valid(&self, tap: usize, pad: usize, len: usize, out_len: usize) -> Range<usize> {
        let s = self.stride;
        let lo = pad.saturating_sub(tap).div_ceil(s);
        let hi = (len + pad).saturating_sub(tap).div_ceil(s);
        lo.min(out_len)..hi.min(out_len).max(lo.min(out_len))
    }
}

// ---------------------------------------------------------------- scratch

thread_local! {
    static SCRATCH_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a per-thread buffer of `len` elements that is kept between
/// calls, so the hot loops neither allocate nor fault in fresh pages. The
/// contents are garbage: callers overwrite what they read.
fn with_scratch<T: Element, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    fn run<U: Element, T: Element, R>(cell: &RefCell<Vec<U>>, len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
        // Busy only if a nested rayon job re-entered this thread: fall back.
        let Ok(mut guard) = cell.try_borrow_mut() else { return f(&mut vec![T::zero(); len]) };
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
        SCRATCH_F32.with(|c| run::<f32, T, R>(c, len, f))
    } else {
        SCRATCH_F64.with(|c| run::<f64, T, R>(c, len, f))
    }
}

// ---------------------------------------------------------- im2col / col2im

/// Fills `col` (`K x nb*P`, row-major) from the `nb` images in `x`.
fn im2col<T: Element>(g: &ConvGeom, x: &[T], nb: usize, col: &mut [T]) {
    let (p, cols, plane) = (g.p(), nb * g.p(), g.h * g.w);
    for img in 0..nb {
        for c in 0..g.ci {
            let src = &x[(img * g.ci + c) * plane..][..plane];
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let row = (c * g.kh + i) * g.kw + j;
                    gather_tap(g, src, i, j, &mut col[row * cols + img * p..][..p]);
                }
            }
        }
    }
}

/// `dst[oy, ox] = plane[oy*s + i - pad_top, ox*s + j - pad_left]`, 0 outside.
fn gather_tap<T: Element>(g: &ConvGeom, plane: &[T], i: usize, j: usize, dst: &mut [T]) {
    let (rows, xs) = (g.valid(i, g.pad_top, g.h, g.ho), g.valid(j, g.pad_left, g.w, g.wo));
    dst[..rows.start * g.wo].fill(T::zero());
    dst[rows.end * g.wo..].fill(T::zero());
    for oy in rows {
        let out = &mut dst[oy * g.wo..][..g.wo];
        let src = &plane[(oy * g.stride + i - g.pad_top) * g.w..][..g.w];
        out[..xs.start].fill(T::zero());
        out[xs.end..].fill(T::zero());
        if g.stride == 1 {
            let first = xs.start + j - g.pad_left;
            out[xs.clone()].copy_from_slice(&src[first..first + xs.len()]);
        } else {
            for ox in xs.clone() {
                out[ox] = src[ox * g.stride + j - g.pad_left];
            }
        }
    }
}

/// The adjoint of `im2col`: overwrites the `nb` images in `dx` with the
/// sums of their entries of `dcol`.
fn col2im<T: Element>(g: &ConvGeom, dcol: &[T], nb: usize, dx: &mut [T]) {
    let (p, cols, plane) = (g.p(), nb * g.p(), g.h * g.w);
    dx[..nb * g.in_image()].fill(T::zero());
    for img in 0..nb {
        for c in 0..g.ci {
            let dst = &mut dx[(img * g.ci + c) * plane..][..plane];
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let row = (c * g.kh + i) * g.kw + j;
                    scatter_tap(g, &dcol[row * cols + img * p..][..p], i, j, dst);
                }
            }
        }
    }
}

/// `plane[oy*s + i - pad_top, ox*s + j - pad_left] += src[oy, ox]` inside the input.
fn scatter_tap<T: Element>(g: &ConvGeom, src: &[T], i: usize, j: usize, plane: &mut [T]) {
    let (rows, xs) = (g.valid(i, g.pad_top, g.h, g.ho), g.valid(j, g.pad_left, g.w, g.wo));
    for oy in rows {
        let s = &src[oy * g.wo..][..g.wo];
        let d = &mut plane[(oy * g.stride + i - g.pad_top) * g.w..][..g.w];
        for ox in xs.clone() {
            d[ox * g.stride + j - g.pad_left] += s[ox];
        }
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

/// The inverse of `images_to_matrix`, adding `bias[ch]` on the way.
fn matrix_to_images<T: Element>(src: &[T], c: usize, p: usize, nb: usize, bias: Option<&[T]>, dst: &mut [T]) {
    for img in 0..nb {
        for ch in 0..c {
            let (s, d) = (&src[ch * nb * p + img * p..][..p], &mut dst[(img * c + ch) * p..][..p]);
            match bias {
                Some(b) => d.iter_mut().zip(s).for_each(|(d, &s)| *d = s + b[ch]),
                None => d.copy_from_slice(s),
            }
        }
    }
}

fn add_bias<T: Element>(y: &mut [T], bias: &[T], p: usize) {
    for (plane, &b) in y.chunks_exact_mut(p).zip(bias.iter().cycle()) {
        plane.iter_mut().for_each(|v| *v += b);
    }
}

// ------------------------------------------------------------------ forward

/// `y [N, Co, Ho, Wo] = conv(x [N, Ci, H, W], w [Co, Ci, KH, KW]) + bias [Co]`.
pub fn conv2d_forward<T: Element>(g: &ConvGeom, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T]) {
    let (nb, xi, yi) = (g.images_per_group(), g.in_image(), g.out_image());
    if yi == 0 || g.n == 0 {
        return;
    }
    y[..g.n * yi].par_chunks_mut(nb * yi).enumerate().for_each(|(grp, y)| {
        let cnt = y.len() / yi;
        forward_group(g, &x[grp * nb * xi..][..cnt * xi], w, bias, y, cnt);
    });
}

fn forward_group<T: Element>(g: &ConvGeom, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T], nb: usize) {
    let (k, p, cols) = (g.k(), g.p(), nb * g.p());
    let wm = MatRef::row_major(w, g.co, k);
    if nb == 1 && g.is_pointwise() {
        matmul(wm, MatRef::row_major(x, k, p), y, false, Threads::Serial);
        if let Some(b) = bias {
            add_bias(y, b, p);
        }
        return;
    }
    let out_len = if nb == 1 { 0 } else { g.co * cols };
    with_scratch::<T, _>(k * cols + out_len, |buf| {
        let (col, out) = buf.split_at_mut(k * cols);
        im2col(g, x, nb, col);
        let col = MatRef::row_major(col, k, cols);
        if nb == 1 {
            // One image: the gemm output already is the NCHW image.
            matmul(wm, col, y, false, Threads::Serial);
            if let Some(b) = bias {
                add_bias(y, b, p);
            }
        } else {
            matmul(wm, col, out, false, Threads::Serial);
            matrix_to_images(out, g.co, p, nb, bias, y);
        }
    });
}

// ------------------------------------------------------------ backward data

/// `dx [N, Ci, H, W]` from `dy [N, Co, Ho, Wo]` and `w`: `W^T dY`, then col2im.
pub fn conv2d_backward_data<T: Element>(g: &ConvGeom, dy: &[T], w: &[T], dx: &mut [T]) {
    let (nb, xi, yi) = (g.images_per_group(), g.in_image(), g.out_image());
    if xi == 0 || g.n == 0 {
        return;
    }
    dx[..g.n * xi].par_chunks_mut(nb * xi).enumerate().for_each(|(grp, dx)| {
        let cnt = dx.len() / xi;
        backward_data_group(g, &dy[grp * nb * yi..][..cnt * yi], w, dx, cnt);
    });
}

fn backward_data_group<T: Element>(g: &ConvGeom, dy: &[T], w: &[T], dx: &mut [T], nb: usize) {
    let (k, p, cols) = (g.k(), g.p(), nb * g.p());
    let wt = MatRef::row_major_t(w, g.co, k);
    if nb == 1 && g.is_pointwise() {
        matmul(wt, MatRef::row_major(dy, g.co, p), dx, false, Threads::Serial);
        return;
    }
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
    let wlen = g.co * g.k();
    dw[..wlen].fill(T::zero());
    if g.n == 0 || wlen == 0 {
        return;
    }
    let nb = g.images_per_group();
    let groups = g.n.div_ceil(nb);
    let per_slot = groups.div_ceil(MAX_WEIGHT_SLOTS) * nb;
    let slots = g.n.div_ceil(per_slot);
    let mut partials = vec![T::zero(); slots * wlen];
    partials.par_chunks_mut(wlen).enumerate().for_each(|(s, part)| {
        let imgs = s * per_slot..((s + 1) * per_slot).min(g.n);
        weight_slot(g, dy, x, imgs, nb, part);
    });
    sum_partials(&partials, wlen, dw);
}

/// Accumulates the weight gradient of the images `imgs` into `part`, `nb`
/// images per gemm.
fn weight_slot<T: Element>(g: &ConvGeom, dy: &[T], x: &[T], imgs: Range<usize>, nb: usize, part: &mut [T]) {
    let mut first = true;
    let mut start = imgs.start;
    while start < imgs.end {
        let cnt = nb.min(imgs.end - start);
        let dy = &dy[start * g.out_image()..][..cnt * g.out_image()];
        let x = &x[start * g.in_image()..][..cnt * g.in_image()];
        weight_group(g, dy, x, cnt, part, !first);
        first = false;
        start += cnt;
    }
}

/// `part (+)= dY [Co, nb*P] * col^T [nb*P, K]` for one group of images.
fn weight_group<T: Element>(g: &ConvGeom, dy: &[T], x: &[T], nb: usize, part: &mut [T], acc: bool) {
    let (k, p, cols) = (g.k(), g.p(), nb * g.p());
    if nb == 1 && g.is_pointwise() {
        let (dym, xt) = (MatRef::row_major(dy, g.co, p), MatRef::row_major_t(x, k, p));
        matmul(dym, xt, part, acc, Threads::Serial);
        return;
    }
    let dyb_len = if nb == 1 { 0 } else { g.co * cols };
    with_scratch::<T, _>(k * cols + dyb_len, |buf| {
        let (col, dyb) = buf.split_at_mut(k * cols);
        im2col(g, x, nb, col);
        let dym = if nb == 1 {
            MatRef::row_major(dy, g.co, cols)
        } else {
            images_to_matrix(dy, g.co, p, nb, dyb);
            MatRef::row_major(&*dyb, g.co, cols)
        };
        matmul(dym, MatRef::row_major_t(col, k, cols), part, acc, Threads::Serial);
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

/// `db[o] = sum over images and pixels of dy[img, o, :]`, accumulated in f64
/// per channel in image order (parallel over channels only).
pub fn conv2d_backward_bias<T: Element>(n: usize, co: usize, p: usize, dy: &[T], db: &mut [T]) {
    db[..co].par_iter_mut().enumerate().for_each(|(o, db)| {
        let mut acc = 0f64;
        for img in 0..n {
            acc += dy[(img * co + o) * p..][..p].iter().map(|&v| Element::to_f64(v)).sum::<f64>();
        }
        *db = <T as Element>::from_f64(acc);
    });
}
