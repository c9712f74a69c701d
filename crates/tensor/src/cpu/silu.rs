//! SiLU, x * sigmoid(x), and its derivative.

use crate::Element;
use rayon::prelude::*;

#[inline]
pub fn sigmoid<T: Element>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

#[inline]
pub fn silu_scalar<T: Element>(x: T) -> T {
    x * sigmoid(x)
}

/// d silu / dx = s * (1 + x * (1 - s)) with s = sigmoid(x).
#[inline]
pub fn silu_grad_scalar<T: Element>(x: T) -> T {
    let s = sigmoid(x);
    s * (T::one() + x * (T::one() - s))
}

pub fn silu_forward<T: Element>(x: &[T], y: &mut [T]) {
    y.par_iter_mut().zip(x.par_iter()).for_each(|(y, &x)| *y = silu_scalar(x));
}

pub fn silu_backward<T: Element>(dy: &[T], x: &[T], dx: &mut [T]) {
    dx.par_iter_mut().zip(dy.par_iter().zip(x.par_iter())).for_each(|(dx, (&dy, &x))| *dx = dy * silu_grad_scalar(x));
}
