//! The 1-D transforms of Winograd F(4, 3) (Lavin & Gray 2016) on blocks of
//! `W` lanes, shared by `winograd_1d.rs` (down the columns) and
//! `winograd_2d.rs` (along both axes). Each is written as whole-block loops
//! so that it vectorises wherever it is inlined under `widest`; the order of
//! every sum is fixed, so each output has the same bits on every path.

use crate::Element;

/// `B^T d` for 6 blocks `d`, `B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0;
/// 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]`.
#[inline(always)]
pub(super) fn bt6<T: Element, const W: usize>(d: &[[T; W]; 6]) -> [[T; W]; 6] {
    let (four, five, two) = (T::from_f64(4.0), T::from_f64(5.0), T::from_f64(2.0));
    let mut out = [[T::zero(); W]; 6];
    for i in 0..W {
        let (d0, d1, d2, d3, d4, d5) = (d[0][i], d[1][i], d[2][i], d[3][i], d[4][i], d[5][i]);
        out[0][i] = (four * d0 - five * d2) + d4;
        out[1][i] = (d3 + d4) - four * (d1 + d2);
        out[2][i] = four * (d1 - d2) + (d4 - d3);
        out[3][i] = two * (d3 - d1) + (d4 - d2);
        out[4][i] = two * (d1 - d3) + (d4 - d2);
        out[5][i] = (four * d1 - five * d3) + d5;
    }
    out
}

/// `A^T m` for 6 blocks `m`, `A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0;
/// 0 1 1 4 4 0; 0 1 -1 8 -8 1]`.
#[inline(always)]
pub(super) fn at4<T: Element, const W: usize>(m: &[[T; W]; 6]) -> [[T; W]; 4] {
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let mut out = [[T::zero(); W]; 4];
    for i in 0..W {
        let (s12, d12) = (m[1][i] + m[2][i], m[1][i] - m[2][i]);
        let (s34, d34) = (m[3][i] + m[4][i], m[3][i] - m[4][i]);
        out[0][i] = (m[0][i] + s12) + s34;
        out[1][i] = d12 + two * d34;
        out[2][i] = s12 + four * s34;
        out[3][i] = (d12 + eight * d34) + m[5][i];
    }
    out
}

/// `A e` for 4 blocks `e` (the adjoint of [`at4`]).
#[inline(always)]
pub(super) fn a6<T: Element, const W: usize>(e: &[[T; W]; 4]) -> [[T; W]; 6] {
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let mut out = [[T::zero(); W]; 6];
    for i in 0..W {
        let (s02, s13) = (e[0][i] + e[2][i], e[1][i] + e[3][i]);
        let (f02, f13) = (e[0][i] + four * e[2][i], two * e[1][i] + eight * e[3][i]);
        out[0][i] = e[0][i];
        out[1][i] = s02 + s13;
        out[2][i] = s02 - s13;
        out[3][i] = f02 + f13;
        out[4][i] = f02 - f13;
        out[5][i] = e[3][i];
    }
    out
}
