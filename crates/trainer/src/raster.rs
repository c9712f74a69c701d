//! 8-bit images in memory and their PNG encoding, and how model values
//! (`f32`) map to pixel bytes.
//!
//! [`ValueRange`] says how to map values to bytes: `Unit` for `[0, 1]`,
//! `Signed` for the model's `[-1, 1]` (`(x + 1) / 2` first). Values outside
//! the range are clamped; NaN becomes 0.

use std::path::{Path, PathBuf};

use diffuse_unet::atomic_file::write_atomic;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

use crate::error::{Error, Result};

/// How image values map to `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueRange {
    /// Values in `[0, 1]`.
    Unit,
    /// Values in `[-1, 1]`, the model's range: `x -> (x + 1) / 2`.
    Signed,
}

impl ValueRange {
    /// Maps one value to `[0, 1]` (not clamped).
    #[inline]
    pub fn to_unit(self, x: f32) -> f32 {
        match self {
            ValueRange::Unit => x,
            ValueRange::Signed => signed_to_unit(x),
        }
    }

    /// Maps one value to a byte: `round(255 * clamp(unit, 0, 1))`, NaN to 0.
    #[inline]
    pub fn to_u8(self, x: f32) -> u8 {
        unit_to_u8(self.to_unit(x))
    }
}

/// `[-1, 1] -> [0, 1]`: `(x + 1) / 2`.
#[inline]
pub fn signed_to_unit(x: f32) -> f32 {
    (x + 1.0) * 0.5
}

/// `[0, 1] -> [-1, 1]`: `2x - 1`.
#[inline]
pub fn unit_to_signed(x: f32) -> f32 {
    x * 2.0 - 1.0
}

/// `[0, 1]` to a byte, rounding to nearest, clamping, NaN to 0.
#[inline]
pub fn unit_to_u8(x: f32) -> u8 {
    if x.is_nan() {
        return 0;
    }
    (x.clamp(0.0, 1.0) * 255.0 + 0.5).floor() as u8
}

/// An 8-bit image in memory: `height` rows of `width` pixels of `channels`
/// interleaved bytes (1 = grey, 3 = RGB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RasterImage {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

impl RasterImage {
    /// A `width x height` image of `channels` filled with `value`.
    pub fn filled(width: usize, height: usize, channels: usize, value: u8) -> Self {
        RasterImage { width, height, channels, pixels: vec![value; width * height * channels] }
    }

    /// Encodes as PNG.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let color = match self.channels {
            1 => ExtendedColorType::L8,
            3 => ExtendedColorType::Rgb8,
            4 => ExtendedColorType::Rgba8,
            c => return Err(Error::InvalidArgument(format!("cannot write a PNG of {c} channels"))),
        };
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(&self.pixels, self.width as u32, self.height as u32, color)
            .map_err(|e| Error::Image { path: PathBuf::from("<png encoder>"), reason: e.to_string() })?;
        Ok(out)
    }

    /// Writes as PNG, atomically.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(write_atomic(path.as_ref(), &self.to_png()?)?)
    }
}
