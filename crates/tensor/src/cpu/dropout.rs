//! Inverted dropout with a mask drawn from Philox: element i is kept iff
//! `philox::keep(philox::bits(seed, step, stream, i), dropout_threshold(p))`,
//! and kept elements are scaled by 1/(1-p). The mask is a pure function of
//! (seed, step, stream, i), so backward regenerates it instead of storing it,
//! and a CUDA kernel draws the identical mask.

use super::elementwise::PAR_CHUNK;
use super::simd::widest;
use crate::{philox, Element};
use rayon::prelude::*;

/// Elements per rayon task: whole Philox blocks of 4 elements each.
const BLOCKS_PER_CHUNK: usize = PAR_CHUNK / 4;
const CHUNK: usize = 4 * BLOCKS_PER_CHUNK;

/// out[i] = keep(i) ? x[i] * scale : 0. Forward and backward are both this:
/// the op is linear and diagonal, so it is its own adjoint.
pub fn apply_mask<T: Element>(x: &[T], p: f32, seed: u64, step: u32, stream: u32, out: &mut [T]) {
    apply_mask_at(x, p, seed, step, stream, 0, out);
}

/// [`apply_mask`] with the mask words of elements [offset, offset + len)
/// (a shard of a batch keeps the batch's own mask).
pub fn apply_mask_at<T: Element>(x: &[T], p: f32, seed: u64, step: u32, stream: u32, offset: u64, out: &mut [T]) {
    let threshold = philox::dropout_threshold(p);
    let scale = T::from_f64(1.0 / (1.0 - p as f64));
    // `move`: captured by value, the threshold and scale stay in registers
    // (by reference, every store through `out` might change them, which
    // keeps the masking loop scalar).
    let mask = move |word: u32, x: T| if philox::keep(word, threshold) { x * scale } else { T::zero() };
    const GROUP: usize = 4 * philox::WIDE_LANES; // elements of one wide draw of Philox blocks
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).enumerate().for_each(|(c, (o, x))| {
        let start = offset + (c * CHUNK) as u64;
        if start.is_multiple_of(4) {
            // whole Philox blocks (one per four elements), WIDE_LANES drawn at once
            widest(
                #[inline(always)]
                || {
                    for (g, (og, xg)) in o.chunks_mut(GROUP).zip(x.chunks(GROUP)).enumerate() {
                        let words =
                            philox::block_bits_wide(seed, step, stream, start / 4 + (g * philox::WIDE_LANES) as u64);
                        // Element order (word w of block j is element 4j + w), so
                        // that the masking loop below is a plain vector loop.
                        let mut flat = [0u32; GROUP];
                        for (e, f) in flat.iter_mut().enumerate() {
                            *f = words[e % 4][e / 4];
                        }
                        for ((o, &x), &word) in og.iter_mut().zip(xg).zip(&flat) {
                            *o = mask(word, x);
                        }
                    }
                },
            );
        } else {
            // a shard starting inside a block: element by element
            let mut block = (u64::MAX, [0u32; 4]);
            for (k, (o, &x)) in o.iter_mut().zip(x).enumerate() {
                let g = start + k as u64;
                if block.0 != g / 4 {
                    block = (g / 4, philox::block_bits(seed, step, stream, g / 4));
                }
                *o = mask(block.1[(g % 4) as usize], x);
            }
        }
    });
}
