//! Seeded test data, independent of the code under test (SplitMix64, not
//! Philox). Shared by this crate's tests and the workspace's tests/ (which
//! include this file by path).
#![allow(dead_code)]

use diffuse_tensor::Tensor;

/// SplitMix64: a tiny independent generator for test data (not Philox, so
/// tests do not depend on the code under test).
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }
    /// Values in [lo, hi).
    pub fn vec_in(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| lo + (self.uniform() + 1.0) * 0.5 * (hi - lo)).collect()
    }
}

/// f32 test data for the per-device tests: the same SplitMix64 stream as
/// `TestRng`, drawn as f32 uniforms.
pub struct TensorRng(TestRng);

impl TensorRng {
    pub fn new(seed: u64) -> Self {
        TensorRng(TestRng::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + u * (hi - lo)
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    /// An f32 CPU tensor of uniform values in [-1, 1).
    pub fn tensor(&mut self, shape: &[usize]) -> Tensor {
        self.tensor_in(shape, -1.0, 1.0)
    }
    pub fn tensor_in(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(self.vec(n, lo, hi), shape.to_vec()).unwrap()
    }
}
