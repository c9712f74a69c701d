//! Inpainting masks: `true` marks a pixel to fill (unknown), `false` a pixel
//! to keep. One `h x w` plane, shared by all channels and images.
//!
//! - [`MaskShape::Box`]: the centre square of half the side.
//! - [`MaskShape::Half`]: the bottom half.
//! - [`MaskShape::Strokes`]: a few thick random strokes (seeded), as the
//!   "thick" masks of RePaint.
//! - [`mask_from_unit_image`]: a mask picture, white (>= 0.5) = fill.

use crate::{Error, Result};
use diffuse_tensor::philox;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskShape {
    Box,
    Half,
    Strokes,
}

/// Philox stream of the stroke masks.
const STROKE_STREAM: u32 = 13;

/// A built-in mask of `h x w`; `seed` only matters for strokes.
pub fn make_mask(shape: MaskShape, h: usize, w: usize, seed: u64) -> Vec<bool> {
    let mut m = vec![false; h * w];
    match shape {
        MaskShape::Box => {
            let (y0, x0) = (h / 4, w / 4);
            for y in y0..y0 + h.div_ceil(2) {
                for x in x0..x0 + w.div_ceil(2) {
                    m[y * w + x] = true;
                }
            }
        }
        MaskShape::Half => m[(h / 2) * w..].fill(true),
        MaskShape::Strokes => {
            let side = h.min(w) as f64;
            let radius = (side / 12.0).max(1.0);
            let mut k = 0u64;
            let mut uniform = || {
                k += 1;
                philox::bits(seed, 0, STROKE_STREAM, k) as f64 / 4294967296.0
            };
            for _ in 0..4 {
                // A stroke: a segment of 0.4..0.8 of the side at a random angle.
                let (cy, cx) = (uniform() * h as f64, uniform() * w as f64);
                let angle = uniform() * std::f64::consts::TAU;
                let len = (0.4 + 0.4 * uniform()) * side;
                let (dy, dx) = (angle.sin() * len / 2.0, angle.cos() * len / 2.0);
                for y in 0..h {
                    for x in 0..w {
                        let (py, px) = (y as f64 + 0.5 - cy, x as f64 + 0.5 - cx);
                        // Distance from the pixel centre to the segment.
                        let l2 = 4.0 * (dy * dy + dx * dx);
                        let u = (((py + dy) * 2.0 * dy + (px + dx) * 2.0 * dx) / l2).clamp(0.0, 1.0);
                        let (qy, qx) = (py + dy - u * 2.0 * dy, px + dx - u * 2.0 * dx);
                        if qy * qy + qx * qx <= radius * radius {
                            m[y * w + x] = true;
                        }
                    }
                }
            }
        }
    }
    m
}

/// A mask from an `h x w` grey picture in `[0, 1]`: white (>= 0.5) is to fill.
/// A mask that keeps nothing or fills nothing is an error (nothing to do, or
/// nothing to condition on is allowed only as an explicit choice: use
/// `diffuse sample`).
pub fn mask_from_unit_image(values: &[f32]) -> Result<Vec<bool>> {
    let m: Vec<bool> = values.iter().map(|&v| v >= 0.5).collect();
    check_mask(&m)?;
    Ok(m)
}

/// A mask must have pixels both to keep and to fill.
pub fn check_mask(m: &[bool]) -> Result<()> {
    if !m.contains(&true) {
        return Err(Error::InvalidArgument("the mask has no pixel to fill (white marks the region to inpaint)".into()));
    }
    if !m.contains(&false) {
        return Err(Error::InvalidArgument("the mask covers the whole image: nothing is known to inpaint from".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_and_half_cover_what_they_say() {
        let b = make_mask(MaskShape::Box, 28, 28, 0);
        assert_eq!(b.iter().filter(|&&v| v).count(), 14 * 14);
        assert!(b[7 * 28 + 7] && b[20 * 28 + 20] && !b[6 * 28 + 7] && !b[21 * 28 + 20]);
        let h = make_mask(MaskShape::Half, 7, 5, 0);
        assert_eq!(h.iter().position(|&v| v), Some(3 * 5));
        assert!(h[3 * 5..].iter().all(|&v| v));
    }

    #[test]
    fn strokes_are_seeded_and_partial() {
        let a = make_mask(MaskShape::Strokes, 28, 28, 1);
        assert_eq!(a, make_mask(MaskShape::Strokes, 28, 28, 1));
        assert_ne!(a, make_mask(MaskShape::Strokes, 28, 28, 2));
        let frac = a.iter().filter(|&&v| v).count() as f64 / a.len() as f64;
        assert!(frac > 0.05 && frac < 0.7, "{frac}");
        check_mask(&a).unwrap();
    }

    #[test]
    fn picture_masks_threshold_at_half_and_must_be_partial() {
        assert_eq!(mask_from_unit_image(&[0.0, 0.49, 0.5, 1.0]).unwrap(), vec![false, false, true, true]);
        assert!(mask_from_unit_image(&[0.0, 0.1]).is_err());
        assert!(mask_from_unit_image(&[0.9, 1.0]).is_err());
    }
}
