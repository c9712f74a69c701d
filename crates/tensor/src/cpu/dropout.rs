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

/// Elements per rayon task: whole Philox blocks, whole keep words.
pub(crate) const CHUNK: usize = PAR_CHUNK / PER_BLOCK * PER_BLOCK;

/// Elements of one wide draw of Philox blocks.
const GROUP: usize = PER_BLOCK * philox::WIDE_LANES;

/// out[i] = keep(i) ? x[i] * scale : 0. Forward and backward are both this:
/// the op is linear and diagonal, so it is its own adjoint.
pub fn apply_mask<T: Element>(x: &[T], p: f32, seed: u64, step: u32, stream: u32, out: &mut [T]) {
    apply_mask_at(x, p, seed, step, stream, 0, out);
}

/// [`apply_mask`] with the mask words of elements [offset, offset + len)
/// (a shard of a batch keeps the batch's own mask).
pub fn apply_mask_at<T: Element>(x: &[T], p: f32, seed: u64, step: u32, stream: u32, offset: u64, out: &mut [T]) {
    mask_at(x, p, seed, step, stream, offset, out, None);
}

/// Words of keep bits [`apply_mask_at`] writes for `len` elements.
pub fn keep_words(len: usize) -> usize {
    len.div_ceil(64)
}

/// [`apply_mask_at`] that also writes the keep bits (bit `i % 64` of word
/// `i / 64` set iff element i is kept; `keep_words(len)` words), so that a
/// backward can apply the same mask ([`apply_keep_bits`]) without drawing it again.
#[allow(clippy::too_many_arguments)]
pub fn apply_mask_keeping_bits<T: Element>(
    x: &[T],
    p: f32,
    seed: u64,
    step: u32,
    stream: u32,
    offset: u64,
    out: &mut [T],
    keep: &mut [u64],
) {
    mask_at(x, p, seed, step, stream, offset, out, Some(keep));
}

/// out[i] = keep bit i ? dy[i] / (1 - p) : 0: the backward of a forward that
/// wrote `keep` ([`apply_mask_keeping_bits`]); the same values as drawing the
/// mask again.
pub fn apply_keep_bits<T: Element>(dy: &[T], p: f32, keep: &[u64], out: &mut [T]) {
    let scale = keep_scale(p);
    out.par_chunks_mut(CHUNK).zip(dy.par_chunks(CHUNK)).zip(keep.par_chunks(CHUNK / 64)).for_each(|((o, dy), keep)| {
        widest(
            #[inline(always)]
            || apply_keep_bits_from(dy, scale, keep, 0, o),
        );
    });
}

/// The factor kept elements are scaled by, 1 / (1 - p), rounded to `T`.
pub(crate) fn keep_scale<T: Element>(p: f32) -> T {
    T::from_f64(1.0 / (1.0 - p as f64))
}

/// [`apply_keep_bits`] on a run of elements whose first is element `start`
/// of the mask `keep` (any start, not only a word's first bit), serially:
/// for a pass that applies the mask to data it is reading anyway.
#[inline(always)]
pub(crate) fn apply_keep_bits_from<T: Element>(dy: &[T], scale: T, keep: &[u64], start: usize, out: &mut [T]) {
    let mut i = 0;
    while i < dy.len() {
        let (word, shift) = (keep[(start + i) / 64], (start + i) % 64);
        let n = (64 - shift).min(dy.len() - i);
        for (e, (o, &d)) in out[i..i + n].iter_mut().zip(&dy[i..i + n]).enumerate() {
            *o = if (word >> (shift + e)) & 1 != 0 { d * scale } else { T::zero() };
        }
        i += n;
    }
}

/// The 16 mask bits of the GROUP elements served by blocks
/// `first_block..first_block + WIDE_LANES`, in element order (half h of word
/// w of block j is element 8j + 2w + h), so that a masking loop over them is
/// a plain vector loop.
#[inline(always)]
fn group_bits(seed: u64, step: u32, stream: u32, first_block: u64) -> [u32; GROUP] {
    let words = philox::block_bits_wide(seed, step, stream, first_block);
    let mut flat = [0u32; GROUP];
    for (e, f) in flat.iter_mut().enumerate() {
        *f = philox::half_bits(words[(e % PER_BLOCK) / 2][e / PER_BLOCK], (e % 2) as u64);
    }
    flat
}

/// Packs the keep bits of `bits` (a group's mask bits, from a multiple of 64)
/// into `keep`, 64 a word.
#[inline(always)]
fn write_keep(bits: &[u32], threshold: u32, keep: &mut [u64]) {
    for (w, words) in keep.iter_mut().zip(bits.chunks(64)) {
        *w = pack_keep(words, threshold);
    }
}

/// Where a masking pass draws its mask: (seed, step, stream) and the
/// dropout probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaskArgs {
    pub p: f32,
    pub seed: u64,
    pub step: u32,
    pub stream: u32,
}

/// `y[k]` masked in place as element `start + k` of the tensor, with the
/// values [`apply_mask_at`] gives that element, for any `start`: what a
/// fused pass (group norm + dropout) runs on the range it just wrote, while
/// it is in cache. With `keep`, also writes the range's keep bits as
/// [`apply_mask_keeping_bits`] does; `start` must then be a multiple of 64.
/// Serial: callers run it inside their own parallel tasks.
#[inline(always)]
pub fn mask_in_place<T: Element>(y: &mut [T], a: MaskArgs, start: u64, keep: Option<&mut [u64]>) {
    let threshold = philox::mask_threshold(a.p);
    let scale = T::from_f64(1.0 / (1.0 - a.p as f64));
    let mask = move |bits: u32, v: T| if philox::keep_mask(bits, threshold) { v * scale } else { T::zero() };
    let per = PER_BLOCK as u64;
    // Elements up to the first block boundary, one block's words.
    let head = (((per - start % per) % per) as usize).min(y.len());
    if head > 0 {
        let block = philox::block_bits(a.seed, a.step, a.stream, start / per);
        for (k, v) in y[..head].iter_mut().enumerate() {
            let g = start + k as u64;
            *v = mask(philox::half_bits(block[((g % per) / 2) as usize], g % 2), *v);
        }
    }
    let first = (start + head as u64) / per;
    let mut keep = keep.inspect(|_| assert!(start.is_multiple_of(64), "keep bits need a start on a word"));
    for (g, yg) in y[head..].chunks_mut(GROUP).enumerate() {
        let flat = group_bits(a.seed, a.step, a.stream, first + (g * philox::WIDE_LANES) as u64);
        for (v, &bits) in yg.iter_mut().zip(&flat) {
            *v = mask(bits, *v);
        }
        if let Some(k) = keep.as_deref_mut() {
            write_keep(&flat[..yg.len()], threshold, &mut k[g * GROUP / 64..]);
        }
    }
}

/// The keep bits of 64 mask words (fewer at the end of a chunk).
#[inline(always)]
fn pack_keep(words: &[u32], threshold: u32) -> u64 {
    words.iter().enumerate().fold(0u64, |acc, (e, &w)| acc | (u64::from(philox::keep_mask(w, threshold)) << e))
}

/// The masking of [`apply_mask_at`], writing the keep bits too when given.
#[allow(clippy::too_many_arguments)]
fn mask_at<T: Element>(
    x: &[T],
    p: f32,
    seed: u64,
    step: u32,
    stream: u32,
    offset: u64,
    out: &mut [T],
    keep: Option<&mut [u64]>,
) {
    const { assert!(CHUNK.is_multiple_of(64) && GROUP.is_multiple_of(64)) };
    let threshold = philox::mask_threshold(p);
    let scale = keep_scale::<T>(p);
    // `move`: captured by value, the threshold and scale stay in registers
    // (by reference, every store through `out` might change them, which
    // keeps the masking loop scalar).
    let mask = move |bits: u32, x: T| if philox::keep_mask(bits, threshold) { x * scale } else { T::zero() };
    // Chunks of CHUNK elements own CHUNK / 64 keep words (none when not asked).
    let mut no_keep = [];
    let (keep, keep_chunk) = match keep {
        Some(k) => (k, CHUNK / 64),
        None => (&mut no_keep[..], 0),
    };
    let keep_chunks = keep.chunks_mut(keep_chunk.max(1)).map(Some).chain(std::iter::repeat_with(|| None));
    let tasks: Vec<_> = out.chunks_mut(CHUNK).zip(x.chunks(CHUNK)).zip(keep_chunks).enumerate().collect();
    tasks.into_par_iter().for_each(|(c, ((o, x), mut keep))| {
        let start = offset + (c * CHUNK) as u64;
        if start.is_multiple_of(PER_BLOCK as u64) {
            // whole Philox blocks (one per eight elements), WIDE_LANES drawn at once
            widest(
                #[inline(always)]
                || {
                    for (g, (og, xg)) in o.chunks_mut(GROUP).zip(x.chunks(GROUP)).enumerate() {
                        let first = start / PER_BLOCK as u64 + (g * philox::WIDE_LANES) as u64;
                        let flat = group_bits(seed, step, stream, first);
                        for ((o, &x), &word) in og.iter_mut().zip(xg).zip(&flat) {
                            *o = mask(word, x);
                        }
                        if let Some(k) = keep.as_deref_mut() {
                            write_keep(&flat[..og.len()], threshold, &mut k[g * GROUP / 64..]);
                        }
                    }
                },
            );
        } else {
            // a shard starting inside a block: element by element
            let per = PER_BLOCK as u64;
            let mut block = (u64::MAX, [0u32; 4]);
            if let Some(k) = keep.as_deref_mut() {
                k.fill(0);
            }
            for (k, (o, &x)) in o.iter_mut().zip(x).enumerate() {
                let g = start + k as u64;
                if block.0 != g / per {
                    block = (g / per, philox::block_bits(seed, step, stream, g / per));
                }
                let bits = philox::half_bits(block.1[((g % per) / 2) as usize], g % 2);
                *o = mask(bits, x);
                if let Some(words) = keep.as_deref_mut() {
                    words[k / 64] |= u64::from(philox::keep_mask(bits, threshold)) << (k % 64);
                }
            }
        }
    });
}
