//! Image and array output: PNG grids of images, trajectories, `.npy` arrays
//! and a loss-curve plot, all drawn by hand into byte buffers and written
//! atomically (a temporary file in the same directory, synced, then renamed
//! over the target).
//!
//! Images come as NCHW `f32` slices with a `[n, c, h, w]` shape and a
//! [`ValueRange`] that says how to map them to bytes: `Unit` for `[0, 1]`,
//! `Signed` for the model's `[-1, 1]` (`(x + 1) / 2` first). Values outside
//! the range are clamped; NaN becomes 0.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

use crate::error::{Error, Result};

/// Pixels of padding between (and around) the images of a grid.
pub const GRID_PADDING: usize = 2;

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
        write_atomic(path.as_ref(), &self.to_png()?)
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: to a temporary file in the same
/// directory, synced to disk, then renamed over `path` (and the directory
/// synced, where the platform allows). A reader sees the old file or the
/// new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name =
        path.file_name().ok_or_else(|| Error::InvalidArgument(format!("{}: not a file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

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

// ---------------------------------------------------------------------------
// NPY

const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The bytes of an NPY v1.0 file holding `data` as little-endian float32 of
/// `shape` (C order). The header is padded with spaces and ends in `\n` so
/// that the data starts at a multiple of 64 bytes, as NumPy writes it.
pub fn npy_bytes(data: &[f32], shape: &[usize]) -> Result<Vec<u8>> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(data.len()) {
        return Err(Error::Shape(format!("{} values given for an array of shape {shape:?}", data.len())));
    }
    let shape_text = match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    let unpadded = NPY_MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let hlen = u16::try_from(header.len())
        .map_err(|_| Error::InvalidArgument(format!("NPY header too long for shape {shape:?}")))?;
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&hlen.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Saves `data` as an NPY v1.0 float32 array of `shape` (for images,
/// `[n, c, h, w]`), atomically.
pub fn save_npy(path: impl AsRef<Path>, data: &[f32], shape: &[usize]) -> Result<()> {
    write_atomic(path.as_ref(), &npy_bytes(data, shape)?)
}

/// Parses an NPY file (v1, v2 or v3) of little-endian float32 in C order:
/// returns the values and the shape.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let bad = |reason: String| Error::BadDims { path: path.to_path_buf(), reason };
    if bytes.len() < 10 || &bytes[..6] != NPY_MAGIC {
        return Err(bad("not an NPY file (no \\x93NUMPY magic)".into()));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(format!("unsupported NPY version {v}"))),
    };
    let header = bytes
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("NPY header truncated or not text".into()))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[i..].trim_start();
        Some(rest.strip_prefix(':')?.trim_start())
    };
    let descr = field("descr").ok_or_else(|| bad("NPY header has no 'descr'".into()))?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("\"<f4\"")) {
        return Err(bad(format!(
            "NPY dtype {} is not little-endian float32 '<f4'",
            descr.split(',').next().unwrap_or("")
        )));
    }
    let fortran = field("fortran_order").ok_or_else(|| bad("NPY header has no 'fortran_order'".into()))?;
    if !fortran.starts_with("False") {
        return Err(bad("NPY array in Fortran order".into()));
    }
    let shape_text = field("shape").ok_or_else(|| bad("NPY header has no 'shape'".into()))?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(format!("NPY shape {shape_text} is not a tuple")))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(format!("NPY shape ({inner}) is not a tuple of integers")))?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("NPY shape {shape:?} too large")))?;
    let payload = &bytes[start + hlen..];
    if payload.len() != count.saturating_mul(4) {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: format!("an NPY float32 array of shape {shape:?}"),
            expected: (start + hlen + count * 4) as u64,
            found: bytes.len() as u64,
        });
    }
    let data = payload.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok((data, shape))
}

/// Loads an NPY float32 array: the values and the shape.
pub fn load_npy(path: impl AsRef<Path>) -> Result<(Vec<f32>, Vec<usize>)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound { path: path.to_path_buf() }
        } else {
            Error::io(path, e)
        }
    })?;
    parse_npy(&bytes, path)
}

// ---------------------------------------------------------------------------
// Loss plot

/// How [`render_loss_plot`] draws.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotOptions {
    /// Image width in pixels (at least 200).
    pub width: usize,
    /// Image height in pixels (at least 120).
    pub height: usize,
    /// Logarithmic y axis (non-positive values are then left out).
    pub log_y: bool,
    /// Centred moving-average window in points: 0 picks one (about a
    /// fiftieth of the points), 1 draws no average.
    pub smoothing: usize,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions { width: 800, height: 480, log_y: true, smoothing: 0 }
    }
}

/// 3x5 bitmap glyphs, one row of 3 bits each (bit 2 = left).
fn glyph(ch: char) -> [u8; 5] {
    match ch {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b001, 0b001, 0b001],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
        '+' => [0b000, 0b010, 0b111, 0b010, 0b000],
        '(' => [0b001, 0b010, 0b010, 0b010, 0b001],
        ')' => [0b100, 0b010, 0b010, 0b010, 0b100],
        'E' => [0b111, 0b100, 0b110, 0b100, 0b111],
        'G' => [0b011, 0b100, 0b101, 0b101, 0b011],
        'k' => [0b100, 0b101, 0b110, 0b101, 0b101],
        'L' => [0b100, 0b100, 0b100, 0b100, 0b111],
        'M' => [0b101, 0b111, 0b111, 0b101, 0b101],
        'O' => [0b010, 0b101, 0b101, 0b101, 0b010],
        'P' => [0b110, 0b101, 0b110, 0b100, 0b100],
        'S' => [0b011, 0b100, 0b010, 0b001, 0b110],
        'T' => [0b111, 0b010, 0b010, 0b010, 0b010],
        _ => [0; 5],
    }
}

const FONT_SCALE: usize = 2;
const GLYPH_W: usize = 4 * FONT_SCALE; // 3 columns + 1 of spacing

struct Canvas {
    img: RasterImage,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x < 0 || y < 0 || x >= self.img.width as i64 || y >= self.img.height as i64 {
            return;
        }
        let o = (y as usize * self.img.width + x as usize) * 3;
        self.img.pixels[o..o + 3].copy_from_slice(&rgb);
    }

    fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, rgb: [u8; 3]) {
        for y in y0..=y1 {
            for x in x0..=x1 {
                self.set(x, y, rgb);
            }
        }
    }

    /// Bresenham line, `thick` pixels wide (a square brush).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), rgb: [u8; 3], thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        let lo = -(thick - 1) / 2;
        let hi = thick / 2;
        loop {
            self.rect(x + lo, y + lo, x + hi, y + hi, rgb);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, rgb: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            let gx = x + (i * GLYPH_W) as i64;
            for (r, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits >> (2 - col) & 1 == 1 {
                        let px = gx + (col * FONT_SCALE) as i64;
                        let py = y + (r * FONT_SCALE) as i64;
                        self.rect(px, py, px + FONT_SCALE as i64 - 1, py + FONT_SCALE as i64 - 1, rgb);
                    }
                }
            }
        }
    }
}

fn text_width(s: &str) -> usize {
    s.chars().count() * GLYPH_W
}

/// A round step giving about `target` intervals over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f < 1.5 {
        1.0
    } else if f < 3.5 {
        2.0
    } else if f < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A short label for a tick value `v` on an axis of tick spacing `step`.
fn format_tick(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.0e}").to_uppercase();
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

fn format_step_tick(v: f64) -> String {
    let i = v.round() as i64;
    if i != 0 && i % 1_000_000 == 0 {
        format!("{}M", i / 1_000_000)
    } else if i != 0 && i % 1000 == 0 {
        format!("{}k", i / 1000)
    } else {
        i.to_string()
    }
}

/// Draws a loss curve: the raw values (light blue), their centred moving
/// average (dark blue, 2 px), axes with round ticks and labels, and grid
/// lines. `points` are `(step, loss)`; non-finite losses (and, on a log
/// axis, non-positive ones) are left out. With no point to draw the axes are
/// still drawn.
pub fn render_loss_plot(points: &[(u64, f64)], opts: &PlotOptions) -> RasterImage {
    let width = opts.width.max(200);
    let height = opts.height.max(120);
    let mut cv = Canvas { img: RasterImage::filled(width, height, 3, 255) };
    let black = [0, 0, 0];
    let grid = [225, 225, 225];
    let raw_col = [160, 190, 235];
    let avg_col = [20, 60, 170];

    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(_, l)| l.is_finite() && (!opts.log_y || *l > 0.0))
        .map(|&(s, l)| (s as f64, l))
        .collect();
    let window = match opts.smoothing {
        0 => (pts.len() / 50).max(1),
        w => w,
    };
    // Centred moving average (the window shrinks at the ends), by prefix sums.
    let mut prefix = Vec::with_capacity(pts.len() + 1);
    prefix.push(0.0);
    for p in &pts {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + p.1);
    }
    let half = window / 2;
    let avg: Vec<(f64, f64)> = (0..pts.len())
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(pts.len());
            (pts[i].0, (prefix[hi] - prefix[lo]) / (hi - lo) as f64)
        })
        .collect();
    let ty = |v: f64| if opts.log_y { v.log10() } else { v };

    let (mut xmin, mut xmax) =
        pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut ymin, mut ymax) =
        pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(ty(p.1)), b.max(ty(p.1))));
    if pts.is_empty() {
        (xmin, xmax) = (0.0, 1.0);
        (ymin, ymax) = if opts.log_y { (-1.0, 0.0) } else { (0.0, 1.0) };
    }
    if xmax - xmin < 1.0 {
        xmax = xmin + 1.0;
    }
    if ymax - ymin < 1e-12 {
        let pad = if ymin.abs() > 1e-12 { ymin.abs() * 0.05 } else { 0.5 };
        ymin -= pad;
        ymax += pad;
    } else {
        let pad = (ymax - ymin) * 0.04;
        ymin -= pad;
        ymax += pad;
    }

    // y ticks (in the transformed space) and their labels.
    let mut yticks: Vec<(f64, String)> = Vec::new();
    if opts.log_y {
        let (lo, hi) = (ymin.floor() as i64, ymax.ceil() as i64);
        for k in lo..=hi {
            for m in [1.0, 2.0, 5.0] {
                let v: f64 = m * 10f64.powi(k as i32);
                let t = v.log10();
                if t >= ymin && t <= ymax && (m == 1.0 || hi - lo <= 2) {
                    yticks.push((t, format_tick(v, 10f64.powi(k as i32))));
                }
            }
        }
    } else {
        let step = nice_step(ymax - ymin, 5.0);
        let mut v = (ymin / step).ceil() * step;
        while v <= ymax + step * 1e-9 {
            yticks.push((v, format_tick(v, step)));
            v += step;
        }
    }
    let xstep = nice_step(xmax - xmin, 6.0).max(1.0).round();
    let mut xticks = Vec::new();
    let mut v = (xmin / xstep).ceil() * xstep;
    while v <= xmax + 1e-9 {
        xticks.push(v);
        v += xstep;
    }

    let label_w = yticks.iter().map(|(_, s)| text_width(s)).max().unwrap_or(0);
    let left = (label_w + 16).max(40) as i64;
    let right = width as i64 - 16;
    let top = 16i64;
    let bottom = height as i64 - 36;
    let px = |x: f64| left + ((x - xmin) / (xmax - xmin) * (right - left) as f64).round() as i64;
    let py = |y: f64| bottom - ((y - ymin) / (ymax - ymin) * (bottom - top) as f64).round() as i64;

    for (t, s) in &yticks {
        let y = py(*t);
        cv.line((left, y), (right, y), grid, 1);
        cv.line((left - 4, y), (left, y), black, 1);
        cv.text(left - 6 - text_width(s) as i64, y - 5, s, black);
    }
    for &t in &xticks {
        let x = px(t);
        cv.line((x, top), (x, bottom), grid, 1);
        cv.line((x, bottom), (x, bottom + 4), black, 1);
        let s = format_step_tick(t);
        cv.text(x - text_width(&s) as i64 / 2, bottom + 8, &s, black);
    }

    let series = |cv: &mut Canvas, s: &[(f64, f64)], col: [u8; 3], thick: i64| {
        let mut prev: Option<(i64, i64)> = None;
        for &(x, y) in s {
            let p = (px(x), py(ty(y)));
            match prev {
                Some(q) if q == p => continue,
                Some(q) => cv.line(q, p, col, thick),
                None => cv.rect(p.0, p.1, p.0, p.1, col),
            }
            prev = Some(p);
        }
    };
    if window > 1 {
        series(&mut cv, &pts, raw_col, 1);
        series(&mut cv, &avg, avg_col, 2);
    } else {
        series(&mut cv, &pts, avg_col, 1);
    }

    // Axes on top, then the axis names.
    cv.line((left, top), (left, bottom), black, 1);
    cv.line((left, bottom), (right, bottom), black, 1);
    let xname = "STEP";
    cv.text((left + right) / 2 - text_width(xname) as i64 / 2, height as i64 - 14, xname, black);
    let yname = if opts.log_y { "LOSS (LOG)" } else { "LOSS" };
    cv.text(left + 6, top + 2, yname, black);
    cv.img
}

/// Renders [`render_loss_plot`] and writes it as a PNG, atomically.
pub fn save_loss_plot(path: impl AsRef<Path>, points: &[(u64, f64)], opts: &PlotOptions) -> Result<()> {
    render_loss_plot(points, opts).save_png(path)
}
