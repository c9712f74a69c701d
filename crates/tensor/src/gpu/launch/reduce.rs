//! Launch code of kernels/reduce.cu, and the rule every split reduction
//! uses to pick its splits: a function of the shape alone (never the
//! device's SM count), so the summation order, and with it the bits, is the
//! same on every GPU and on the emulator.

use super::{alloc, run, BLOCK, MAX_GRID};
use crate::gpu::kernels;
use crate::gpu::{Dim3, GpuDevice, GpuStorage, KernelArg};
use crate::{Result, TensorError};

/// Blocks a split reduction aims for: about two waves on a 132-SM H100.
pub const TARGET_BLOCKS: usize = 256;

/// How to split `terms` summands per output when the unsplit first pass has
/// `blocks` blocks: `(splits, terms per split)`, with at least `min_terms`
/// terms in every split but the last and at most 65535 splits (a grid y/z
/// dimension).
pub fn split_terms(blocks: usize, terms: usize, min_terms: usize) -> (usize, usize) {
    let most = terms.div_ceil(min_terms.max(1)).clamp(1, 65535);
    let want = TARGET_BLOCKS.div_ceil(blocks.max(1)).clamp(1, most);
    let per = terms.div_ceil(want).max(1);
    (terms.div_ceil(per).max(1), per)
}

/// out [count] = sum over z = 0..splits of ws [z * count + i], in z order.
pub(crate) fn sum_splits(
    dev: &GpuDevice,
    op: &'static str,
    ws: &GpuStorage,
    splits: usize,
    count: usize,
) -> Result<GpuStorage> {
    let out = alloc(dev, count)?;
    if count == 0 {
        return Ok(out);
    }
    let splits_arg = i32::try_from(splits).map_err(|_| TensorError::invalid(op, format!("{splits} splits")))?;
    let blocks = (count as u64).div_ceil(BLOCK as u64).clamp(1, MAX_GRID) as u32;
    let args = [out.arg(), ws.arg(), KernelArg::I32(splits_arg), KernelArg::U64(count as u64)];
    run(dev, &kernels::reduce::SUM_SPLITS_F32, Dim3::x(blocks), &args)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_terms_and_respect_the_limits() {
        for (blocks, terms, min) in [(1, 64, 1), (1, 64, 4), (32, 50_176, 256), (300, 10, 1), (1, 1, 1), (2, 0, 1)] {
            let (s, per) = split_terms(blocks, terms, min);
            assert!(s >= 1 && per >= 1 && s <= 65535, "{blocks} {terms} {min}: {s} x {per}");
            assert!(s * per >= terms && (s - 1) * per < terms.max(1), "{blocks} {terms} {min}: {s} x {per}");
            assert!(s == 1 || per >= min, "{blocks} {terms} {min}: {s} x {per}");
            assert!(s == 1 || blocks * (s - 1) < TARGET_BLOCKS, "{blocks} {terms} {min}: {s} splits");
        }
        // the MNIST conv bias: 32 channels, 64 images of 28x28
        assert_eq!(split_terms(32, 64 * 784, 1024), (8, 6272));
    }
}
