//! Seeded inputs for the self-test: SplitMix64 drawn as f32 uniforms, the
//! same stream as the test suite's `TensorRng` (crates/tensor/tests/common),
//! and independent of the code under test (not Philox).

use crate::Result;
use diffuse_tensor::Tensor;

pub struct TensorRng(u64);

impl TensorRng {
    pub fn new(seed: u64) -> Self {
        TensorRng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + u * (hi - lo)
    }

    /// A CPU f32 tensor of uniform values in [-1, 1).
    pub fn tensor(&mut self, shape: &[usize]) -> Result<Tensor> {
        self.tensor_in(shape, -1.0, 1.0)
    }

    pub fn tensor_in(&mut self, shape: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.uniform(lo, hi)).collect();
        Ok(Tensor::from_vec(v, shape.to_vec())?)
    }
}
