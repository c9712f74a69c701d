//! 8-bit images in memory and their PNG encoding, how model values (`f32`)
//! map to pixel bytes, and decoding an image file (PNG/JPEG) for a model.
//!
//! [`ValueRange`] says how to map values to bytes: `Unit` for `[0, 1]`,
//! `Signed` for the model's `[-1, 1]` (`(x + 1) / 2` first). Values outside
//! the range are clamped; NaN becomes 0.

use std::path::{Path, PathBuf};

use diffuse_unet::atomic_file::write_atomic;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
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

/// How [`load_image`] resizes: smoothly for pictures, nearest for masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// Triangle (bilinear) filter, whose support widens when shrinking, so
    /// downscaling is antialiased.
    Smooth,
    /// Nearest neighbour (masks stay binary).
    Nearest,
}

/// An image file decoded for a model, and what it was before conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedImage {
    /// `channels x size x size` values in `[-1, 1]`, channel-major.
    pub values: Vec<f32>,
    /// The file's own width, height and colour channels (1 grey, 3 colour;
    /// an alpha channel is not counted and is dropped).
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

impl LoadedImage {
    /// True when the file had to be resized (or cropped) to the model's size.
    pub fn resized(&self, size: usize) -> bool {
        self.width != size || self.height != size
    }
}

/// True when the file's first bytes are those of an image format we decode.
pub fn looks_like_image(path: &Path) -> bool {
    image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .is_ok_and(|r| matches!(r.format(), Some(image::ImageFormat::Png | image::ImageFormat::Jpeg)))
}

/// Decodes a PNG or JPEG file (by content), resizes it so the shorter side is
/// `size` and centre-crops it to a square (when it is not `size x size`
/// already), and converts it to grey (Rec. 709 luma) or RGB to give
/// `channels` channels in `[-1, 1]` (byte `v` to `v / 127.5 - 1`).
pub fn load_image(path: &Path, channels: usize, size: usize, resize: Resize) -> Result<LoadedImage> {
    load_image_limited(path, channels, size, resize, DEFAULT_DECODE_LIMIT)
}

/// Most bytes one decoder may allocate for a user's image (a 16k x 16k RGBA
/// picture); data sets pass their share of the memory budget instead.
pub const DEFAULT_DECODE_LIMIT: u64 = 1 << 30;

/// [`load_image`] with a cap on what the decoder may allocate: it checks the
/// header's size against it before allocating, so a forged header is an
/// error, not an allocation failure.
pub fn load_image_limited(
    path: &Path,
    channels: usize,
    size: usize,
    resize: Resize,
    max_decode: u64,
) -> Result<LoadedImage> {
    if channels != 1 && channels != 3 {
        return Err(Error::InvalidArgument(format!("{channels} channels: images load as 1 (grey) or 3 (RGB)")));
    }
    if size == 0 {
        return Err(Error::InvalidArgument("image size 0".into()));
    }
    // Some decoders' messages span lines; errors are one line.
    let img_err = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason: reason.split_whitespace().collect::<Vec<_>>().join(" "),
    };
    if !path.exists() {
        return Err(Error::NotFound { path: path.to_path_buf() });
    }
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_decode);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| img_err(format!("not a readable PNG/JPEG image: {e}")))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 {
        return Err(img_err("image has no pixels".into()));
    }
    let own_channels = if img.color().has_color() { 3 } else { 1 };
    let s = size as u32;
    let filter = match resize {
        Resize::Smooth => FilterType::Triangle,
        Resize::Nearest => FilterType::Nearest,
    };
    let img = if img.width() == s && img.height() == s { img } else { img.resize_to_fill(s, s, filter) };
    let plane = size * size;
    let mut values = vec![0f32; channels * plane];
    if channels == 1 {
        for (o, &v) in values.iter_mut().zip(img.to_luma8().as_raw().iter()) {
            *o = crate::data::byte_to_signed(v);
        }
    } else {
        for (i, px) in img.to_rgb8().as_raw().chunks_exact(3).enumerate() {
            for c in 0..3 {
                values[c * plane + i] = crate::data::byte_to_signed(px[c]);
            }
        }
    }
    Ok(LoadedImage { values, width, height, channels: own_channels })
}
