//! Images laid out as PNG grids: a batch of samples side by side
//! ([`make_grid`], as torchvision's `make_grid`) and a sampling trajectory,
//! one row per sample and one column per timestep ([`make_trajectory`]).
//!
//! Images come as NCHW `f32` slices with a `[n, c, h, w]` shape and a
//! [`ValueRange`] that says how their values map to bytes.

use std::path::Path;

use crate::error::{Error, Result};
use crate::raster::{RasterImage, ValueRange};

/// Pixels of padding between (and around) the images of a grid.
pub const GRID_PADDING: usize = 2;

fn check_shape(data: &[f32], shape: [usize; 4]) -> Result<()> {
    let [n, c, h, w] = shape;
    let want = n.checked_mul(c).and_then(|v| v.checked_mul(h)).and_then(|v| v.checked_mul(w));
    if want != Some(data.len()) {
        return Err(Error::Shape(format!("{} values given for images of shape [{n}, {c}, {h}, {w}]", data.len())));
    }
    Ok(())
}

/// Lays out `n` images of `[c, h, w]` (c = 1 or 3) in a grid of `nrow` images
/// per row (as torchvision's `make_grid`: `ceil(n / nrow)` rows), with
/// [`GRID_PADDING`] pixels of black between and around them. The result is
/// `nrow' * (w + 2) + 2` wide and `rows * (h + 2) + 2` high, where
/// `nrow' = min(nrow, n)`.
pub fn make_grid(data: &[f32], shape: [usize; 4], nrow: usize, range: ValueRange) -> Result<RasterImage> {
    check_shape(data, shape)?;
    let [n, c, h, w] = shape;
    if n == 0 || h == 0 || w == 0 {
        return Err(Error::InvalidArgument(format!("no image to draw in shape [{n}, {c}, {h}, {w}]")));
    }
    if c != 1 && c != 3 {
        return Err(Error::InvalidArgument(format!("images of {c} channels: a grid takes 1 (grey) or 3 (RGB)")));
    }
    if nrow == 0 {
        return Err(Error::InvalidArgument("nrow 0".into()));
    }
    let p = GRID_PADDING;
    let cols = nrow.min(n);
    let rows = n.div_ceil(cols);
    let gw = cols * (w + p) + p;
    let gh = rows * (h + p) + p;
    let mut img = RasterImage::filled(gw, gh, c, 0);
    let plane = h * w;
    for k in 0..n {
        let (r, col) = (k / cols, k % cols);
        let x0 = p + col * (w + p);
        let y0 = p + r * (h + p);
        let src = &data[k * c * plane..(k + 1) * c * plane];
        for y in 0..h {
            for x in 0..w {
                let o = ((y0 + y) * gw + x0 + x) * c;
                for ch in 0..c {
                    img.pixels[o + ch] = range.to_u8(src[ch * plane + y * w + x]);
                }
            }
        }
    }
    Ok(img)
}

/// Saves `n` images as a PNG grid of `nrow` images per row (see
/// [`make_grid`]), grey for 1 channel, RGB for 3.
pub fn save_grid(
    path: impl AsRef<Path>,
    data: &[f32],
    shape: [usize; 4],
    nrow: usize,
    range: ValueRange,
) -> Result<()> {
    make_grid(data, shape, nrow, range)?.save_png(path)
}

/// Lays out a sampling trajectory: `frames[t]` holds the `n` images of
/// `shape = [n, c, h, w]` at the t-th recorded timestep; the grid has one
/// row per sample and one column per frame (left to right in the order
/// given).
pub fn make_trajectory(frames: &[&[f32]], shape: [usize; 4], range: ValueRange) -> Result<RasterImage> {
    if frames.is_empty() {
        return Err(Error::InvalidArgument("trajectory with no frames".into()));
    }
    for (t, f) in frames.iter().enumerate() {
        check_shape(f, shape).map_err(|e| Error::Shape(format!("frame {t}: {e}")))?;
    }
    let [n, c, h, w] = shape;
    let per = c * h * w;
    let t = frames.len();
    let mut all = Vec::with_capacity(n * t * per);
    for i in 0..n {
        for f in frames {
            all.extend_from_slice(&f[i * per..(i + 1) * per]);
        }
    }
    make_grid(&all, [n * t, c, h, w], t, range)
}

/// Saves a trajectory PNG (see [`make_trajectory`]).
pub fn save_trajectory(path: impl AsRef<Path>, frames: &[&[f32]], shape: [usize; 4], range: ValueRange) -> Result<()> {
    make_trajectory(frames, shape, range)?.save_png(path)
}
