//! Layout kernels on NCHW slices: nearest-neighbour 2x upsampling, channel
//! concatenation and splitting, and the per-(sample, channel) bias that the
//! U-Net adds after projecting the timestep embedding.
//!
//! All work is parallel over whole planes or samples, so every output element
//! is written by exactly one task and reductions (the bias gradient) sum one
//! plane in f64 in a fixed order: deterministic for any thread count.

use super::elementwise::lane_sum_f64;
use crate::Element;
use rayon::prelude::*;

/// y [planes, 2h, 2w] from x [planes, h, w]: each input pixel fills a 2x2 block.
pub fn upsample_nearest2x_forward<T: Element>(x: &[T], h: usize, w: usize, y: &mut [T]) {
    if h == 0 || w == 0 {
        return;
    }
    y.par_chunks_mut(4 * h * w).zip(x.par_chunks(h * w)).for_each(|(yp, xp)| {
        for i in 0..h {
            let src = &xp[i * w..(i + 1) * w];
            // the two output rows of input row i are identical
            for di in 0..2 {
                let dst = &mut yp[(2 * i + di) * 2 * w..(2 * i + di + 1) * 2 * w];
                for (pair, &v) in dst.chunks_exact_mut(2).zip(src) {
                    pair[0] = v;
                    pair[1] = v;
                }
            }
        }
    });
}

/// dx [planes, h, w] from dy [planes, 2h, 2w]: the sum of each 2x2 block
/// (the adjoint of copying a pixel into four places).
pub fn upsample_nearest2x_backward<T: Element>(dy: &[T], h: usize, w: usize, dx: &mut [T]) {
    if h == 0 || w == 0 {
        return;
    }
    dx.par_chunks_mut(h * w).zip(dy.par_chunks(4 * h * w)).for_each(|(xp, yp)| {
        for i in 0..h {
            let r0 = &yp[2 * i * 2 * w..(2 * i + 1) * 2 * w];
            let r1 = &yp[(2 * i + 1) * 2 * w..(2 * i + 2) * 2 * w];
            for j in 0..w {
                xp[i * w + j] = (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]);
            }
        }
    });
}

/// out [n, ca+cb, hw] from a [n, ca, hw] and b [n, cb, hw]. `a_len` and
/// `b_len` are the per-sample lengths ca*hw and cb*hw.
pub fn concat_channels<T: Element>(a: &[T], a_len: usize, b: &[T], b_len: usize, out: &mut [T]) {
    if a_len + b_len == 0 {
        return;
    }
    out.par_chunks_mut(a_len + b_len).enumerate().for_each(|(n, o)| {
        o[..a_len].copy_from_slice(&a[n * a_len..(n + 1) * a_len]);
        o[a_len..].copy_from_slice(&b[n * b_len..(n + 1) * b_len]);
    });
}

/// The inverse of `concat_channels`: a and b from d [n, ca+cb, hw].
pub fn split_channels<T: Element>(d: &[T], a_len: usize, b_len: usize, a: &mut [T], b: &mut [T]) {
    let len = a_len + b_len;
    if len == 0 {
        return;
    }
    // two passes, each parallel over samples, because a and b are separate outputs
    if a_len > 0 {
        a.par_chunks_mut(a_len).enumerate().for_each(|(n, a)| a.copy_from_slice(&d[n * len..n * len + a_len]));
    }
    if b_len > 0 {
        b.par_chunks_mut(b_len).enumerate().for_each(|(n, b)| b.copy_from_slice(&d[n * len + a_len..(n + 1) * len]));
    }
}

/// y [planes, hw] = x + bias[plane], one bias value per (sample, channel).
pub fn add_channel_bias<T: Element>(x: &[T], bias: &[T], hw: usize, y: &mut [T]) {
    if hw == 0 {
        return;
    }
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).zip(bias.par_iter()).for_each(|((yp, xp), &b)| {
        for (y, &x) in yp.iter_mut().zip(xp) {
            *y = x + b;
        }
    });
}

/// dbias[plane] = sum of dy over the plane, accumulated in f64 in a fixed order.
pub fn channel_bias_backward<T: Element>(dy: &[T], hw: usize, dbias: &mut [T]) {
    if hw == 0 {
        dbias.iter_mut().for_each(|d| *d = T::zero());
        return;
    }
    dbias.par_iter_mut().zip(dy.par_chunks(hw)).for_each(|(d, plane)| {
        *d = T::from_f64(lane_sum_f64(plane, plane, |v, _| v.to_f64()));
    });
}
