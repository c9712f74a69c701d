//! The forward diffusion step q(x_t | x_0): eps ~ N(0, 1) from Philox and
//! x_t = sqrt(abar_n) x0 + sqrt(1 - abar_n) eps, one (a_n, b_n) per sample.
//!
//! eps[i] is `philox::normal(seed, step, stream, i)` drawn in f32 (the CUDA
//! kernel draws the same f32) and only then widened to T.

use super::elementwise::PAR_CHUNK;
use crate::{philox, Element};
use rayon::prelude::*;

/// Chunks of whole Philox blocks (4 elements each), so each block is drawn once.
const BLOCKS_PER_CHUNK: usize = PAR_CHUNK / 4;
const CHUNK: usize = 4 * BLOCKS_PER_CHUNK;

/// out[i] = philox::normal(seed, step, stream, i) as T.
pub fn fill_normal<T: Element>(out: &mut [T], seed: u64, step: u32, stream: u32) {
    fill_normal_at(out, seed, step, stream, 0);
}

/// out[i] = philox::normal(seed, step, stream, offset + i) as T: the elements
/// [offset, offset + len) of the same draw (a shard of a batch).
pub fn fill_normal_at<T: Element>(out: &mut [T], seed: u64, step: u32, stream: u32, offset: u64) {
    if offset.is_multiple_of(4) {
        // Aligned: whole Philox blocks, each drawn once.
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| {
            let first_block = offset / 4 + (c * BLOCKS_PER_CHUNK) as u64;
            for (j, quad) in dst.chunks_mut(4).enumerate() {
                let z = philox::normal4(seed, step, stream, first_block + j as u64);
                for (d, &z) in quad.iter_mut().zip(&z) {
                    *d = T::from_f32(z);
                }
            }
        });
        return;
    }
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| {
        let start = offset + (c * CHUNK) as u64;
        let mut block = (u64::MAX, [0f32; 4]);
        for (k, d) in dst.iter_mut().enumerate() {
            let g = start + k as u64;
            if block.0 != g / 4 {
                block = (g / 4, philox::normal4(seed, step, stream, g / 4));
            }
            *d = T::from_f32(block.1[(g % 4) as usize]);
        }
    });
}

/// x_t = a[n] * x0 + b[n] * eps per sample of `per_sample` elements.
pub fn noise_mix<T: Element>(x0: &[T], eps: &[T], a: &[T], b: &[T], per_sample: usize, x_t: &mut [T]) {
    if per_sample == 0 {
        return;
    }
    x_t.par_chunks_mut(per_sample)
        .zip(x0.par_chunks(per_sample).zip(eps.par_chunks(per_sample)))
        .zip(a.par_iter().zip(b.par_iter()))
        .for_each(|((xt, (x0, eps)), (&a, &b))| {
            for ((xt, &x0), &e) in xt.iter_mut().zip(x0).zip(eps) {
                *xt = a * x0 + b * e;
            }
        });
}

/// dx0 = a[n] * dx_t per sample (eps does not depend on x0).
pub fn noise_add_backward<T: Element>(dx_t: &[T], a: &[T], per_sample: usize, dx0: &mut [T]) {
    if per_sample == 0 {
        return;
    }
    dx0.par_chunks_mut(per_sample).zip(dx_t.par_chunks(per_sample)).zip(a.par_iter()).for_each(|((dx0, dxt), &a)| {
        for (d, &g) in dx0.iter_mut().zip(dxt) {
            *d = a * g;
        }
    });
}
