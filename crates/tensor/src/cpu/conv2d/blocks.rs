//! Helpers of the Winograd paths (`winograd_1d.rs`, `winograd_2d.rs`): which
//! convs they take, and elementwise loops written as whole blocks of lanes,
//! which LLVM vectorises where plain loops over several slices are not (too
//! many runtime alias checks).

use crate::geom::ConvGeom;
use crate::Element;
use std::any::TypeId;

/// Whether a conv has the shape both Winograd paths take: f32, 3x3, stride
/// 1, a non-empty output (f64 stays on the direct path: it is the reference
/// of the reference tests).
pub(super) fn is_f32_3x3_stride_1<T: Element>(g: &ConvGeom) -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>() && g.kh == 3 && g.kw == 3 && g.stride == 1 && g.ho > 0 && g.wo > 0
}

/// Runs `$body` for `$at` over `0..$len` in blocks of `$w` elements, `$w`
/// a constant (16, 8, 4 or 1: the widest that fits), the last block moved
/// back to end at `$len` (overlapping the one before: the transforms are
/// elementwise, so an element computed twice gets the same bits).
macro_rules! for_blocks {
    ($len:expr, |$at:ident, $w:ident| $body:block) => {{
        let len: usize = $len;
        if len >= 16 {
            const $w: usize = 16;
            let mut start = 0;
            loop {
                let $at = start.min(len - $w);
                $body
                if $at + $w >= len {
                    break;
                }
                start += $w;
            }
        } else if len >= 8 {
            const $w: usize = 8;
            for $at in [0, len - $w] {
                $body
            }
        } else if len >= 4 {
            const $w: usize = 4;
            for $at in [0, len - $w] {
                $body
            }
        } else {
            const $w: usize = 1;
            for $at in 0..len {
                $body
            }
        }
    }};
}

/// `N` values from `src[at..]` as an array.
#[inline(always)]
pub(super) fn load<T: Element, const N: usize>(src: &[T], at: usize) -> [T; N] {
    let mut a = [T::zero(); N];
    a.copy_from_slice(&src[at..at + N]);
    a
}

/// `dst = src` for short runs (a row of a small plane): whole vectors, the
/// last one overlapping the one before, instead of a `memcpy` call per run.
#[inline(always)]
pub(super) fn copy_run<T: Element>(dst: &mut [T], src: &[T]) {
    let n = dst.len();
    let src = &src[..n];
    macro_rules! by {
        ($w:literal) => {{
            let mut at = 0;
            while at + $w < n {
                dst[at..at + $w].copy_from_slice(&src[at..at + $w]);
                at += $w;
            }
            dst[n - $w..].copy_from_slice(&src[n - $w..]);
        }};
    }
    if n >= 16 {
        by!(16)
    } else if n >= 8 {
        by!(8)
    } else if n >= 4 {
        by!(4)
    } else {
        dst.copy_from_slice(src);
    }
}
