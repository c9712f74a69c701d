//! The unit-test harness of both Winograd paths: a conv's forward and
//! weight gradient at any channel count, padding and batch, against naive f64
//! loops (the ops route only some sizes to each path; `tests/conv2d.rs`
//! checks those through the public ops).

use super::Epilogue;
use crate::geom::ConvGeom;

fn geom(
    n: usize,
    ci: usize,
    co: usize,
    (h, w): (usize, usize),
    (pt, pb, pl, pr): (usize, usize, usize, usize),
) -> ConvGeom {
    let (ho, wo) = (h + pt + pb - 2, w + pl + pr - 2);
    ConvGeom { n, ci, h, w, co, kh: 3, kw: 3, stride: 1, pad_top: pt, pad_left: pl, ho, wo }
}

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Calls `f(y index, x index, w index)` for every product of the conv.
fn terms(g: &ConvGeom, mut f: impl FnMut(usize, usize, usize)) {
    for n in 0..g.n {
        for o in 0..g.co {
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    for c in 0..g.ci {
                        for i in 0..3 {
                            for j in 0..3 {
                                let iy = (oy + i) as isize - g.pad_top as isize;
                                let ix = (ox + j) as isize - g.pad_left as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                    let xi = ((n * g.ci + c) * g.h + iy as usize) * g.w + ix as usize;
                                    let yi = ((n * g.co + o) * g.ho + oy) * g.wo + ox;
                                    f(yi, xi, (o * g.ci + c) * 9 + i * 3 + j);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// |got - want| <= tol * sum |terms| for every element.
fn assert_close(what: &str, got: &[f32], want: &[f64], scale: &[f64], tol: f64) {
    let mut worst = 0f64;
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let err = (g as f64 - w).abs() / s.max(1e-30);
        assert!(err <= tol, "{what}[{i}]: {g} vs {w} (scale {s})");
        worst = worst.max(err);
    }
    eprintln!("{what}: worst error {worst:.2e} of the terms' magnitude");
}

/// A path's entry points, as the harness calls them.
pub(super) type Forward = fn(&ConvGeom, &[f32], &[f32], &Epilogue<'_, f32>, &mut [f32]);
pub(super) type BackwardWeight = fn(&ConvGeom, &[f32], &[f32], &mut [f32], bool) -> Vec<f64>;

/// A test conv: `(n, ci, co, (h, w), (top, bottom, left, right) padding)`.
pub(super) type Shape = (usize, usize, usize, (usize, usize), (usize, usize, usize, usize));

/// The shapes both paths are checked at: from 1x1 planes to several tiles
/// and blocks a row, and planes of padding only.
pub(super) const SHAPES: [Shape; 9] = [
    (1, 1, 1, (1, 1), (1, 1, 1, 1)),
    (2, 3, 5, (7, 7), (1, 1, 1, 1)),
    (3, 17, 9, (14, 13), (1, 1, 1, 1)),
    (1, 16, 33, (5, 37), (2, 0, 0, 2)),
    (2, 8, 8, (3, 4), (0, 0, 0, 0)),
    (1, 20, 4, (31, 34), (0, 2, 1, 1)),
    (5, 32, 32, (7, 7), (1, 1, 1, 1)),
    // Only padding: an input with no columns, or no rows.
    (1, 4, 4, (3, 0), (1, 1, 2, 2)),
    (2, 4, 3, (0, 5), (2, 2, 1, 1)),
];

/// `forward` and `backward_weight` at each shape against the f64 loops,
/// within 1e-5 of the products' magnitude.
pub(super) fn check_against_f64_loops(shapes: &[Shape], forward: Forward, backward_weight: BackwardWeight) {
    for (k, &(n, ci, co, hw, pads)) in shapes.iter().enumerate() {
        let g = geom(n, ci, co, hw, pads);
        let (x, w) = (values(n * ci * g.h * g.w, 1 + k as u64), values(co * ci * 9, 50 + k as u64));
        let dy = values(n * co * g.p(), 99 + k as u64);
        let mut y = vec![f32::NAN; n * co * g.p()];
        forward(&g, &x, &w, &Epilogue::bias(None), &mut y);
        let mut dw = vec![f32::NAN; co * ci * 9];
        assert!(backward_weight(&g, &dy, &x, &mut dw, false).is_empty(), "bias terms when not asked");
        let mut dw_again = vec![f32::NAN; co * ci * 9];
        let sums = backward_weight(&g, &dy, &x, &mut dw_again, true);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dw), bits(&dw_again), "the bias terms change dw {g:?}");
        // The bias terms: each dy plane's sum, as [o * n + img].
        let p = g.p();
        let want: Vec<f64> =
            (0..co * n).map(|k| dy[((k % n) * co + k / n) * p..][..p].iter().map(|&v| v as f64).sum()).collect();
        let scale: Vec<f64> = (0..co * n)
            .map(|k| dy[((k % n) * co + k / n) * p..][..p].iter().map(|&v| (v as f64).abs()).sum())
            .collect();
        assert_eq!(sums.len(), want.len(), "bias terms {g:?}");
        for (k, ((&s, &w), &a)) in sums.iter().zip(&want).zip(&scale).enumerate() {
            assert!((s - w).abs() <= 1e-12 * a.max(1e-30), "bias term {k} {g:?}: {s} vs {w}");
        }

        let (mut want_y, mut scale_y) = (vec![0f64; y.len()], vec![0f64; y.len()]);
        let (mut want_dw, mut scale_dw) = (vec![0f64; dw.len()], vec![0f64; dw.len()]);
        terms(&g, |yi, xi, wi| {
            want_y[yi] += x[xi] as f64 * w[wi] as f64;
            scale_y[yi] += (x[xi] as f64 * w[wi] as f64).abs();
            want_dw[wi] += dy[yi] as f64 * x[xi] as f64;
            scale_dw[wi] += (dy[yi] as f64 * x[xi] as f64).abs();
        });
        assert_close(&format!("forward {g:?}"), &y, &want_y, &scale_y, 1e-5);
        assert_close(&format!("weight gradient {g:?}"), &dw, &want_dw, &scale_dw, 1e-5);
    }
}
