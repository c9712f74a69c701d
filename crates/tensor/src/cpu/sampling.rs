//! Per-sample scaling and clamping: what the diffusion targets and the
//! samplers need beyond plain elementwise ops.

use crate::Element;
use rayon::prelude::*;

/// y[n, ...] = x[n, ...] * s[n], for `s.len()` samples of `x.len() / s.len()` elements.
pub fn scale_per_sample<T: Element>(x: &[T], s: &[T], y: &mut [T]) {
    let per = x.len() / s.len().max(1);
    y.par_chunks_mut(per.max(1)).zip(x.par_chunks(per.max(1))).zip(s.par_iter()).for_each(|((y, x), &s)| {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y = x * s);
    });
}

/// y = min(max(x, lo), hi); NaN stays NaN so a diverged run is not hidden.
pub fn clamp<T: Element>(x: &[T], lo: T, hi: T, y: &mut [T]) {
    y.par_iter_mut().zip(x.par_iter()).for_each(|(y, &x)| {
        *y = if x < lo {
            lo
        } else if x > hi {
            hi
        } else {
            x
        }
    });
}
