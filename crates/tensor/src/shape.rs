//! Tensor shapes (row-major, contiguous) and the checks ops run on them.

use crate::{Result, TensorError};
use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }

    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// The dims of a rank-4 (N, C, H, W) tensor, or a clear error naming `op`.
    pub fn nchw(&self, op: &'static str) -> Result<(usize, usize, usize, usize)> {
        match self.0.as_slice() {
            &[n, c, h, w] => Ok((n, c, h, w)),
            _ => Err(TensorError::shape(op, "a rank-4 (N, C, H, W) tensor", self)),
        }
    }

    /// The dims of a rank-3 tensor.
    pub fn dims3(&self, op: &'static str) -> Result<(usize, usize, usize)> {
        match self.0.as_slice() {
            &[a, b, c] => Ok((a, b, c)),
            _ => Err(TensorError::shape(op, "a rank-3 tensor", self)),
        }
    }

    /// The dims of a rank-2 tensor.
    pub fn dims2(&self, op: &'static str) -> Result<(usize, usize)> {
        match self.0.as_slice() {
            &[a, b] => Ok((a, b)),
            _ => Err(TensorError::shape(op, "a rank-2 tensor", self)),
        }
    }

    /// Error unless `self` equals `expected`.
    pub fn expect(&self, op: &'static str, expected: &[usize]) -> Result<()> {
        if self.0 == expected {
            Ok(())
        } else {
            Err(TensorError::shape(op, format!("{:?}", expected), self))
        }
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}

impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}
