//! Shared test support: seeded random data, relative error, and central
//! finite differences in f64. Oracles are NOT here: each test file writes its
//! own naive float64 loops, sharing no code with the fast path.
#![allow(dead_code)]

use diffuse_tensor::{DType, Tensor};
use proptest::prelude::*;

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

/// Sizes that include the awkward ones (1, 3, 7, 13) next to ordinary ones.
pub fn awkward(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(3), Just(7), Just(13), 1..=max].prop_filter("bounded", move |&v| v <= max.max(1))
}

/// ||a - b|| / ||b||, with a floor on ||b|| so an all-zero reference is not a division by zero.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_err: lengths differ");
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-30)
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn t32(data: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(data.iter().map(|&x| x as f32).collect::<Vec<f32>>(), shape.to_vec()).unwrap()
}

pub fn t64(data: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(data.to_vec(), shape.to_vec()).unwrap()
}

pub fn v64(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

pub fn is_f64(t: &Tensor) -> bool {
    t.dtype() == DType::F64
}

/// Gradient of the scalar `f` at `x` by central differences.
pub fn fd_grad(x: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = x[i];
            x[i] = orig + h;
            let fp = f(&x);
            x[i] = orig - h;
            let fm = f(&x);
            x[i] = orig;
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

/// Asserts `rel_err(got, want) < tol` with a message that names the check.
#[track_caller]
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    assert!(e < tol, "{what}: relative error {e:.3e} exceeds {tol:.0e}");
}

/// Runs this binary's test `name` again in a child process with `threads`
/// rayon threads and returns the hash it printed on its "bits: " line.
pub fn bits_in_child(name: &str, threads: usize) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("DIFFUSE_BITS_CHILD", "1")
        .output()
        .expect("child test run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest prints the hash on the same line as the test's name.
    let hash = stdout.lines().find_map(|l| l.split_once("bits: ").map(|(_, h)| h.trim().to_string()));
    hash.unwrap_or_else(|| panic!("child printed no hash: {stdout}"))
}

/// FNV-1a over the f32 bits of some tensors.
pub fn bits_hash(ts: &[&Tensor]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for v in ts.iter().flat_map(|t| t.to_vec_f32().unwrap()) {
        h = (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3);
    }
    h
}
