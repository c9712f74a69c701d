//! The classical denoiser the model is compared with: a Gaussian filter whose
//! width is chosen by grid search on the very images being scored (an
//! oracle choice, so the baseline gets its best case).
//!
//! The filter is separable, `radius = ceil(3 sigma)` taps each side,
//! weights `exp(-d^2 / 2 sigma^2)` normalised to sum 1, and mirrors the image
//! at its borders ("reflect": `c b a | a b c`, as scipy.ndimage).

use crate::metrics;
use crate::{Error, Result};

/// Filter widths (pixels) tried by [`best_gaussian`].
pub const GAUSSIAN_GRID: [f64; 10] = [0.25, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0];

/// Index into `0..n` of position `i` mirrored at the borders (edge repeated).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - 1 - m }) as usize
}

fn kernel(sigma: f64) -> Vec<f64> {
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f64> = (-r..=r).map(|d| (-((d * d) as f64) / (2.0 * sigma * sigma)).exp()).collect();
    let s: f64 = k.iter().sum();
    k.into_iter().map(|v| v / s).collect()
}

/// Gaussian filter of every `h x w` plane of `data` (planes one after another).
pub fn gaussian_filter(data: &[f32], h: usize, w: usize, sigma: f64) -> Result<Vec<f32>> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(Error::InvalidArgument(format!("Gaussian filter sigma must be positive, got {sigma}")));
    }
    if h == 0 || w == 0 || !data.len().is_multiple_of(h * w) {
        return Err(Error::Shape(format!("{} values are not whole {h}x{w} planes", data.len())));
    }
    let k = kernel(sigma);
    let r = (k.len() / 2) as isize;
    let mut out = vec![0f32; data.len()];
    let mut rows = vec![0f64; h * w];
    for (src, dst) in data.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
        for y in 0..h {
            for x in 0..w {
                rows[y * w + x] = k
                    .iter()
                    .enumerate()
                    .map(|(j, kw)| kw * src[y * w + reflect(x as isize + j as isize - r, w)] as f64)
                    .sum();
            }
        }
        for y in 0..h {
            for x in 0..w {
                let v: f64 = k
                    .iter()
                    .enumerate()
                    .map(|(j, kw)| kw * rows[reflect(y as isize + j as isize - r, h) * w + x])
                    .sum();
                dst[y * w + x] = v as f32;
            }
        }
    }
    Ok(out)
}

/// The best Gaussian filter of [`GAUSSIAN_GRID`] for `noisy` against `clean`
/// (both `[0, 1]` pixel units, `shape = [n, c, h, w]`) by mean per-image
/// PSNR; outputs clamped to [0, 1]. Returns (sigma, filtered images).
pub fn best_gaussian(noisy: &[f32], clean: &[f32], shape: [usize; 4]) -> Result<(f64, Vec<f32>)> {
    let [_, _, h, w] = shape;
    let mut best: Option<(f64, f64, Vec<f32>)> = None;
    for sigma in GAUSSIAN_GRID {
        let mut f = gaussian_filter(noisy, h, w, sigma)?;
        f.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        let p = metrics::psnr_per_image(&f, clean, shape, 1.0)?;
        let score = p.iter().map(|v| v.min(100.0)).sum::<f64>() / p.len() as f64;
        if best.as_ref().is_none_or(|b| score > b.1) {
            best = Some((sigma, score, f));
        }
    }
    let (sigma, _, f) = best.ok_or_else(|| Error::InvalidArgument("empty filter grid".into()))?;
    Ok((sigma, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 2-D sum in f64 with the same mirrored borders.
    fn naive(data: &[f32], h: usize, w: usize, sigma: f64) -> Vec<f64> {
        let r = (3.0 * sigma).ceil() as isize;
        let mut out = vec![0.0; h * w];
        for y in 0..h as isize {
            for x in 0..w as isize {
                let (mut num, mut den) = (0.0, 0.0);
                for dy in -r..=r {
                    for dx in -r..=r {
                        let wt = (-((dy * dy + dx * dx) as f64) / (2.0 * sigma * sigma)).exp();
                        num += wt * data[reflect(y + dy, h) * w + reflect(x + dx, w)] as f64;
                        den += wt;
                    }
                }
                out[(y * w as isize + x) as usize] = num / den;
            }
        }
        out
    }

    #[test]
    fn separable_filter_matches_the_direct_sum() {
        let (h, w) = (9, 13);
        let data: Vec<f32> = (0..h * w).map(|i| diffuse_tensor::philox::normal(4, 0, 0, i as u64)).collect();
        for sigma in [0.3, 1.0, 2.5, 6.0] {
            let f = gaussian_filter(&data, h, w, sigma).unwrap();
            for (a, b) in f.iter().zip(naive(&data, h, w, sigma)) {
                assert!((*a as f64 - b).abs() < 1e-5, "sigma {sigma}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn reflect_mirrors_with_the_edge_repeated() {
        let idx: Vec<usize> = (-4..8).map(|i| reflect(i, 4)).collect();
        assert_eq!(idx, vec![3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]);
    }

    #[test]
    fn grid_search_prefers_smoothing_of_noisy_flat_images() {
        let clean = vec![0.5f32; 2 * 16 * 16];
        let noisy: Vec<f32> = clean
            .iter()
            .enumerate()
            .map(|(i, c)| c + 0.2 * diffuse_tensor::philox::normal(1, 0, 0, i as u64))
            .collect();
        let (sigma, f) = best_gaussian(&noisy, &clean, [2, 1, 16, 16]).unwrap();
        assert!(sigma >= 2.0, "{sigma}");
        assert!(metrics::mse(&f, &clean).unwrap() < 0.1 * metrics::mse(&noisy, &clean).unwrap());
    }
}
