//! Image quality metrics on NCHW `f32` slices, computed in f64.
//!
//! - [`mse`]: mean squared error over all values.
//! - [`psnr`]: `10 log10(L^2 / MSE)` from the MSE of the whole slice, `L` the
//!   data range (1.0 for `[0, 1]` images, 2.0 for the model's `[-1, 1]`);
//!   `+inf` for identical inputs. [`psnr_per_image`] gives one value per
//!   image (average those for the per-image mean that papers often report).
//! - [`ssim`]: the SSIM of Wang, Bovik, Sheikh and Simoncelli (2004) as in
//!   their reference code: an 11x11 Gaussian window of sigma 1.5 (weights
//!   summing to 1), `C1 = (K1 L)^2`, `C2 = (K2 L)^2` with `K1 = 0.01`,
//!   `K2 = 0.03`, population (weighted) variances, the SSIM map over the
//!   'valid' window positions only (no padding), averaged per channel, then
//!   over channels and images. Images smaller than the window use the largest
//!   odd window that fits (same sigma).

use rayon::prelude::*;

use crate::error::{Error, Result};

/// The data range of images in `[0, 1]`.
pub const DEFAULT_DATA_RANGE: f64 = 1.0;

fn check_same(a: &[f32], b: &[f32]) -> Result<()> {
    if a.len() != b.len() {
        return Err(Error::Shape(format!("comparing {} values with {} values", a.len(), b.len())));
    }
    if a.is_empty() {
        return Err(Error::Shape("comparing empty arrays".into()));
    }
    Ok(())
}

fn check_shape(a: &[f32], b: &[f32], shape: [usize; 4]) -> Result<()> {
    check_same(a, b)?;
    let [n, c, h, w] = shape;
    if n * c * h * w != a.len() {
        return Err(Error::Shape(format!("{} values given for images of shape [{n}, {c}, {h}, {w}]", a.len())));
    }
    Ok(())
}

/// Mean squared error between two slices of the same length.
pub fn mse(a: &[f32], b: &[f32]) -> Result<f64> {
    check_same(a, b)?;
    let s: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum();
    Ok(s / a.len() as f64)
}

fn psnr_from_mse(mse: f64, data_range: f64) -> f64 {
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (data_range * data_range / mse).log10()
    }
}

fn check_range(data_range: f64) -> Result<()> {
    if !(data_range.is_finite() && data_range > 0.0) {
        return Err(Error::InvalidArgument(format!("data range {data_range} (must be positive)")));
    }
    Ok(())
}

/// Peak signal-to-noise ratio in dB, `10 log10(data_range^2 / mse(a, b))`;
/// `f64::INFINITY` when the inputs are identical.
pub fn psnr(a: &[f32], b: &[f32], data_range: f64) -> Result<f64> {
    check_range(data_range)?;
    Ok(psnr_from_mse(mse(a, b)?, data_range))
}

/// PSNR of each image of `shape = [n, c, h, w]`.
pub fn psnr_per_image(a: &[f32], b: &[f32], shape: [usize; 4], data_range: f64) -> Result<Vec<f64>> {
    check_shape(a, b, shape)?;
    check_range(data_range)?;
    let per = shape[1] * shape[2] * shape[3];
    a.chunks_exact(per).zip(b.chunks_exact(per)).map(|(x, y)| Ok(psnr_from_mse(mse(x, y)?, data_range))).collect()
}

/// Parameters of [`ssim_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct SsimOptions {
    /// Side of the Gaussian window (odd).
    pub window: usize,
    /// Standard deviation of the Gaussian window.
    pub sigma: f64,
    pub k1: f64,
    pub k2: f64,
    /// Dynamic range of the values (1.0 for `[0, 1]`, 2.0 for `[-1, 1]`).
    pub data_range: f64,
}

impl Default for SsimOptions {
    fn default() -> Self {
        SsimOptions { window: 11, sigma: 1.5, k1: 0.01, k2: 0.03, data_range: DEFAULT_DATA_RANGE }
    }
}

impl SsimOptions {
    /// The defaults with another data range.
    pub fn with_data_range(data_range: f64) -> Self {
        SsimOptions { data_range, ..Default::default() }
    }
}

/// Normalised 1-D Gaussian weights of `size` taps.
pub fn gaussian_window(size: usize, sigma: f64) -> Vec<f64> {
    let r = (size as f64 - 1.0) / 2.0;
    let g: Vec<f64> = (0..size)
        .map(|i| {
            let d = i as f64 - r;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let s: f64 = g.iter().sum();
    g.into_iter().map(|v| v / s).collect()
}

/// Mean SSIM of one `h x w` plane.
fn ssim_plane(x: &[f32], y: &[f32], h: usize, w: usize, g: &[f64], c1: f64, c2: f64) -> f64 {
    let k = g.len();
    let (oh, ow) = (h - k + 1, w - k + 1);
    // Horizontal pass: 5 maps of h x ow.
    let mut hz = vec![[0f64; 5]; h * ow];
    for r in 0..h {
        for c in 0..ow {
            let mut acc = [0f64; 5];
            for (t, &wt) in g.iter().enumerate() {
                let a = x[r * w + c + t] as f64;
                let b = y[r * w + c + t] as f64;
                acc[0] += wt * a;
                acc[1] += wt * b;
                acc[2] += wt * a * a;
                acc[3] += wt * b * b;
                acc[4] += wt * a * b;
            }
            hz[r * ow + c] = acc;
        }
    }
    let mut total = 0.0;
    for r in 0..oh {
        for c in 0..ow {
            let mut m = [0f64; 5];
            for (t, &wt) in g.iter().enumerate() {
                let v = &hz[(r + t) * ow + c];
                for i in 0..5 {
                    m[i] += wt * v[i];
                }
            }
            let (mx, my) = (m[0], m[1]);
            let vx = m[2] - mx * mx;
            let vy = m[3] - my * my;
            let cxy = m[4] - mx * my;
            total += ((2.0 * mx * my + c1) * (2.0 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
        }
    }
    total / (oh * ow) as f64
}

/// SSIM of each image of `shape = [n, c, h, w]` (mean over its channels).
pub fn ssim_per_image(a: &[f32], b: &[f32], shape: [usize; 4], opts: &SsimOptions) -> Result<Vec<f64>> {
    check_shape(a, b, shape)?;
    check_range(opts.data_range)?;
    if opts.window == 0 || opts.window.is_multiple_of(2) {
        return Err(Error::InvalidArgument(format!("SSIM window {} (must be odd)", opts.window)));
    }
    if !(opts.sigma.is_finite() && opts.sigma > 0.0) {
        return Err(Error::InvalidArgument(format!("SSIM sigma {}", opts.sigma)));
    }
    let [_, c, h, w] = shape;
    let fit = h.min(w);
    let size = opts.window.min(if fit % 2 == 1 { fit } else { fit - 1 });
    let g = gaussian_window(size, opts.sigma);
    let c1 = (opts.k1 * opts.data_range).powi(2);
    let c2 = (opts.k2 * opts.data_range).powi(2);
    let plane = h * w;
    let per_plane: Vec<f64> =
        a.par_chunks(plane).zip(b.par_chunks(plane)).map(|(x, y)| ssim_plane(x, y, h, w, &g, c1, c2)).collect();
    Ok(per_plane.chunks_exact(c).map(|p| p.iter().sum::<f64>() / c as f64).collect())
}

/// Mean SSIM over the images and channels of `shape = [n, c, h, w]`.
pub fn ssim_with(a: &[f32], b: &[f32], shape: [usize; 4], opts: &SsimOptions) -> Result<f64> {
    let v = ssim_per_image(a, b, shape, opts)?;
    Ok(v.iter().sum::<f64>() / v.len() as f64)
}

/// Mean SSIM with the standard parameters and data range 1.0 (`[0, 1]`).
pub fn ssim(a: &[f32], b: &[f32], shape: [usize; 4]) -> Result<f64> {
    ssim_with(a, b, shape, &SsimOptions::default())
}
