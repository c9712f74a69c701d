//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
//! 3", SC'11) and Box-Muller normals. `kernels/philox.cuh` is its CUDA twin:
//! the number drawn for element `i` of stream `stream` at step `step` under
//! `seed` is a pure function of those four values on every device.
//!
//! Layout: element i uses block b = i / 4 and lane i % 4 of
//! philox(counter = [b lo, b hi, step, stream], key = [seed lo, seed hi]).
//! Normals pair lanes (0, 1) and (2, 3) through Box-Muller in f32.

use rayon::prelude::*;

/// The step of a Philox draw, and where a GPU kernel reads it instead: a
/// training graph replays the same launches every step, so the step that
/// changes between them sits in device memory (the per-step scalars) at
/// address `at`, which the caller keeps alive and holding `value` while the
/// kernels run. The CPU and launches without `at` use `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhiloxStep {
    pub value: u32,
    /// Device address of a u32 equal to `value` (None: passed by value).
    pub at: Option<u64>,
}

impl From<u32> for PhiloxStep {
    fn from(value: u32) -> Self {
        PhiloxStep { value, at: None }
    }
}

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// The Philox4x32 bijection with 10 rounds.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The four raw words of block `block` for (seed, step, stream).
#[inline]
pub fn block_bits(seed: u64, step: u32, stream: u32, block: u64) -> [u32; 4] {
    philox4x32_10([block as u32, (block >> 32) as u32, step, stream], [seed as u32, (seed >> 32) as u32])
}

/// Blocks processed together by [`block_bits_wide`]: 16, two AVX-512
/// registers of 64-bit products per multiply, so two independent chains of
/// rounds hide each other's latency (dropout measured ~28% faster than at 8).
pub const WIDE_LANES: usize = 16;

/// The words of the blocks `first_block..first_block + WIDE_LANES`, as
/// `out[word][j]` = word `word` of block `first_block + j`: the same numbers
/// as that many [`block_bits`] calls, computed lane-wise so the compiler can
/// use SIMD multiplies (dropout masks draw one block per eight elements).
#[inline(always)]
pub fn block_bits_wide(seed: u64, step: u32, stream: u32, first_block: u64) -> [[u32; WIDE_LANES]; 4] {
    let mut c0 = [0u32; WIDE_LANES];
    let mut c1 = [0u32; WIDE_LANES];
    for j in 0..WIDE_LANES {
        let block = first_block.wrapping_add(j as u64);
        c0[j] = block as u32;
        c1[j] = (block >> 32) as u32;
    }
    let mut c2 = [step; WIDE_LANES];
    let mut c3 = [stream; WIDE_LANES];
    let (mut k0, mut k1) = (seed as u32, (seed >> 32) as u32);
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        for j in 0..WIDE_LANES {
            let p0 = M0 as u64 * c0[j] as u64;
            let p1 = M1 as u64 * c2[j] as u64;
            let (hi0, lo0, hi1, lo1) = ((p0 >> 32) as u32, p0 as u32, (p1 >> 32) as u32, p1 as u32);
            c0[j] = hi1 ^ c1[j] ^ k0;
            c1[j] = lo1;
            c2[j] = hi0 ^ c3[j] ^ k1;
            c3[j] = lo0;
        }
    }
    [c0, c1, c2, c3]
}

/// A word to a uniform in the open interval (0, 1): 24 bits, exact in f32.
#[inline(always)]
pub fn uniform_open(x: u32) -> f32 {
    ((x >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// Box-Muller on two words: two independent standard normals.
#[inline(always)]
pub fn box_muller(a: u32, b: u32) -> (f32, f32) {
    let u1 = uniform_open(a);
    let u2 = uniform_open(b);
    let r = (-2.0f32 * u1.ln()).sqrt();
    let theta = std::f32::consts::TAU * u2;
    (r * theta.cos(), r * theta.sin())
}

/// Four normals of one block.
#[inline]
pub fn normal4(seed: u64, step: u32, stream: u32, block: u64) -> [f32; 4] {
    let x = block_bits(seed, step, stream, block);
    let (z0, z1) = box_muller(x[0], x[1]);
    let (z2, z3) = box_muller(x[2], x[3]);
    [z0, z1, z2, z3]
}

/// The standard normal drawn for element `i`.
pub fn normal(seed: u64, step: u32, stream: u32, i: u64) -> f32 {
    normal4(seed, step, stream, i / 4)[(i % 4) as usize]
}

/// Fills `out[i] = normal(seed, step, stream, i)` in parallel.
pub fn fill_normal(out: &mut [f32], seed: u64, step: u32, stream: u32) {
    out.par_chunks_mut(4 * 1024).enumerate().for_each(|(chunk, dst)| {
        let first_block = (chunk * 1024) as u64;
        for (j, quad) in dst.chunks_mut(4).enumerate() {
            let z = normal4(seed, step, stream, first_block + j as u64);
            quad.copy_from_slice(&z[..quad.len()]);
        }
    });
}

/// The raw word for element `i` (lane i % 4 of block i / 4): timesteps,
/// initialisation, stroke masks and class-label dropout draw from it.
#[inline]
pub fn bits(seed: u64, step: u32, stream: u32, i: u64) -> u32 {
    block_bits(seed, step, stream, i / 4)[(i % 4) as usize]
}

/// A 24-bit keep test (class-label dropout, one word per image): keep when
/// `word >> 8` is at least `round(p * 2^24)`; an integer comparison so every
/// device draws the identical mask.
#[inline]
pub fn dropout_threshold(p: f32) -> u32 {
    (p as f64 * 16_777_216.0).round() as u32
}

#[inline(always)]
pub fn keep(word: u32, threshold: u32) -> bool {
    (word >> 8) >= threshold
}

/// Elements one Philox block serves in a dropout mask: 16 bits each, so
/// the generator (10 rounds a block) costs half of what a word an element
/// did, and p is resolved to 2^-16.
pub const MASK_ELEMENTS_PER_BLOCK: u64 = 8;

/// The 16 mask bits of element `i`: half `i % 2` (low half first) of word
/// `(i / 2) % 4` of block `i / 8`.
#[inline]
pub fn mask_bits(seed: u64, step: u32, stream: u32, i: u64) -> u32 {
    let word = block_bits(seed, step, stream, i / MASK_ELEMENTS_PER_BLOCK)[((i / 2) % 4) as usize];
    half_bits(word, i % 2)
}

/// Half `h` (0: low, 1: high) of a word, as 16 bits.
#[inline(always)]
pub fn half_bits(word: u32, h: u64) -> u32 {
    (word >> (16 * h)) & 0xffff
}

/// Dropout keeps element i when its 16 mask bits are at least
/// `round(p * 2^16)` (see [`keep_mask`]).
#[inline]
pub fn mask_threshold(p: f32) -> u32 {
    (p as f64 * 65_536.0).round() as u32
}

#[inline(always)]
pub fn keep_mask(bits16: u32, threshold: u32) -> bool {
    bits16 >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dropout's 16-bit layout pinned to the Random123 known answer of block
    /// 0 (seed 0, counter 0): elements 0-7 are the low then high halves of
    /// its words 0-3, and element 8 starts block 1.
    #[test]
    fn mask_bits_are_the_halves_of_the_block_words() {
        let want = [0xe8d5, 0x6627, 0xc58d, 0xe169, 0xac4c, 0xbc57, 0xdbd8, 0x9b00];
        for (i, &w) in want.iter().enumerate() {
            assert_eq!(mask_bits(0, 0, 0, i as u64), w, "element {i}");
        }
        assert_eq!(mask_bits(0, 0, 0, 8), block_bits(0, 0, 0, 1)[0] & 0xffff);
        assert_eq!(mask_threshold(0.1), 6554);
        assert!(keep_mask(6554, 6554) && !keep_mask(6553, 6554));
    }

    // Known answers published with Random123 (kat_vectors, philox4x32_10).
    #[test]
    fn wide_blocks_equal_single_blocks() {
        // Awkward starts: zero, odd, and blocks crossing the 2^32 boundary of the counter's low word.
        for (seed, step, stream, first) in
            [(0u64, 0u32, 0u32, 0u64), (0x9E37_79B9_7F4A_7C15, 7, 3, 12_345), (42, 1, 16, (1u64 << 32) - 3)]
        {
            let wide = block_bits_wide(seed, step, stream, first);
            for (w, words) in wide.iter().enumerate() {
                for (j, &got) in words.iter().enumerate() {
                    let single = block_bits(seed, step, stream, first + j as u64);
                    assert_eq!(got, single[w], "seed {seed} first {first} block {j} word {w}");
                }
            }
        }
    }

    #[test]
    fn random123_known_answers() {
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn normals_have_unit_moments_and_are_pure() {
        let n = 1 << 18;
        let mut v = vec![0f32; n];
        fill_normal(&mut v, 42, 7, 3);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        for i in [0u64, 1, 5, 4095, 4096, 100_003] {
            assert_eq!(v[i as usize], normal(42, 7, 3, i));
        }
        // a different step, stream or seed gives different numbers
        assert_ne!(normal(42, 8, 3, 0), v[0]);
        assert_ne!(normal(42, 7, 4, 0), v[0]);
        assert_ne!(normal(43, 7, 3, 0), v[0]);
    }

    #[test]
    fn dropout_mask_rate() {
        let t = dropout_threshold(0.25);
        let kept = (0..100_000u64).filter(|&i| keep(bits(1, 0, 0, i), t)).count();
        assert!((kept as f64 / 100_000.0 - 0.75).abs() < 0.01);
    }
}
