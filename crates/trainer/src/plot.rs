//! The loss-curve plot of a training run, drawn by hand (lines, a 3x5
//! bitmap font) into an RGB [`RasterImage`].

use std::path::Path;

use crate::error::Result;
use crate::raster::RasterImage;

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
