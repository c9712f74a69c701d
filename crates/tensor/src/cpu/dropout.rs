//! Inverted dropout with a mask drawn from Philox: element i is kept iff
//! `philox::keep_mask(philox::mask_bits(seed, step, stream, i), mask_threshold(p))`
//! (16 bits an element, eight elements a Philox block),
//! and kept elements are scaled by 1/(1-p). The mask is a pure function of
//! (seed, step, stream, i), so backward regenerates it instead of storing it,
//! and a CUDA kernel draws the identical mask.

use super::elementwise::PAR_CHUNK;
use super::simd::widest;
use crate::{philox, Element};
use rayon::prelude::*;

/// Elements a Philox block serves.
const PER_BLOCK: usize = philox::MASK_ELEMENTS_PER_BLOCK as usize;

/// Elements per rayon task: whole Philox blocks.
const CHUNK: usize = PAR_CHUNK / PER_BLOCK * PER_BLOCK;

/// out[i] = keep(i) ? x[i] * scale : 0. Forward and backward are both this:
/// the op is linear and diagonal, so it is its own adjoint.
pub fn apply_mask<T: Element>(x: &[T], p: f32, seed: u64, step: u32, stream: u32, out: &mut [T]) {
    apply_mask_at(x, p, seed, step, stream, 0, out);
}

/// [`apply_mask`] with the mask words of elements [offset, offset + len)
/// (a shard of a batch keeps the batch's own mask).
pub fn apply_mask_at<T: Element>(x: &[T], p: f32, seed: u64, step: u32, stream: u32, offset: u64, out: &mut [T]) {
    let threshold = philox::mask_threshold(p);
    let scale = T::from_f64(1.0 / (1.0 - p as f64));
    // `move`: captured by value, the threshold and scale stay in registers
    // (by reference, every store through `out` might change them, which
    // keeps the masking loop scalar).
    let mask = move |bits: u32, x: T| if philox::keep_mask(bits, threshold) { x * scale } else { T::zero() };
    const GROUP: usize = PER_BLOCK * philox::WIDE_LANES; // elements of one wide draw of Philox blocks
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).enumerate().for_each(|(c, (o, x))| {
        let start = offset + (c * CHUNK) as u64;
        if start.is_multiple_of(PER_BLOCK as u64) {
            // whole Philox blocks (one per eight elements), WIDE_LANES drawn at once
            widest(
                #[inline(always)]
                || {
                    for (g, (og, xg)) in o.chunks_mut(GROUP).zip(x.chunks(GROUP)).enumerate() {
                        let first = start / PER_BLOCK as u64 + (g * philox::WIDE_LANES) as u64;
                        let words = philox::block_bits_wide(seed, step, stream, first);
                        // Element order (half h of word w of block j is element
                        // 8j + 2w + h), so that the masking loop below is a plain
                        // vector loop.
                        let mut flat = [0u32; GROUP];
                        for (e, f) in flat.iter_mut().enumerate() {
                            *f = philox::half_bits(words[(e % PER_BLOCK) / 2][e / PER_BLOCK], (e % 2) as u64);
                        }
                        for ((o, &x), &word) in og.iter_mut().zip(xg).zip(&flat) {
                            *o = mask(word, x);
                        }
                    }
                },
            );
        } else {
            // a shard starting inside a block: element by element
            let per = PER_BLOCK as u64;
            let mut block = (u64::MAX, [0u32; 4]);
            for (k, (o, &x)) in o.iter_mut().zip(x).enumerate() {
                let g = start + k as u64;
                if block.0 != g / per {
                    block = (g / per, philox::block_bits(seed, step, stream, g / per));
                }
                *o = mask(philox::half_bits(block.1[((g % per) / 2) as usize], g % 2), x);
            }
        }
    });
}
