//! Shared test support: property-test settings, seeded random data,
//! relative error, and central finite differences in f64. Oracles are NOT
//! here: each test file writes its own naive float64 loops, sharing no code
//! with the fast path.
#![allow(dead_code)]

use diffuse_tensor::{DType, Tensor};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

pub mod device;
pub mod rng;
pub use device::*;
pub use rng::*;

/// The seed of every property test outside explore mode.
const CI_SEED: u64 = 0x00D1_FF05_E5EE_D5EE;
/// Explore mode's default number of cases, as a multiple of the CI count.
const EXPLORE_FACTOR: u32 = 10;

/// Whether `DIFFUSE_EXPLORE` asks for fresh seeds (`scripts/explore.sh`).
pub fn explore_mode() -> bool {
    std::env::var("DIFFUSE_EXPLORE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Settings of every property test. By default a fixed seed and `cases`
/// cases, so a commit always gets the same verdict (PROPTEST_CASES and
/// PROPTEST_RNG_SEED are ignored). With `DIFFUSE_EXPLORE=1`: the seed of
/// PROPTEST_RNG_SEED (a fresh random one if unset) and PROPTEST_CASES cases
/// (default 10x `cases`). Either way, entries of a committed
/// `<file>.proptest-regressions` run first.
pub fn proptest_config(cases: u32) -> ProptestConfig {
    let from_env = ProptestConfig::default(); // reads the PROPTEST_* variables
    if explore_mode() {
        let explore_cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok());
        ProptestConfig { cases: explore_cases.unwrap_or(cases * EXPLORE_FACTOR), ..from_env }
    } else {
        ProptestConfig { cases, rng_seed: RngSeed::Fixed(CI_SEED), ..from_env }
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

/// Gradient of the scalar `f` at `x` by five-point central differences:
/// error O(h^4) instead of O(h^2), for functions whose third derivative is
/// large (group norm over groups of two values).
pub fn fd_grad5(x: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = x[i];
            let mut at = |d: f64| {
                x[i] = orig + d;
                f(&x)
            };
            let g = (8.0 * (at(h) - at(-h)) - (at(2.0 * h) - at(-2.0 * h))) / (12.0 * h);
            x[i] = orig;
            g
        })
        .collect()
}

/// Asserts `rel_err(got, want) < tol` with a message that names the check.
/// Only for outputs computed with one rounding from exact inputs (or in f64):
/// where an f32 result sums signed terms, use `assert_close_scaled`.
#[track_caller]
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    assert!(e < tol, "{what}: relative error {e:.3e} exceeds {tol:.0e}");
}

/// Like `assert_close`, but relative to `scale`: the oracle run on absolute
/// values (e.g. sum over k of |x_k| |w_k| + |b| for a dot product). Sums of
/// signed terms may cancel to almost nothing, and then a plain relative
/// error measures the cancellation, not the op: f32 rounding is
/// proportional to the magnitudes of the terms, not to their sum.
#[track_caller]
pub fn assert_close_scaled(what: &str, got: &[f64], want: &[f64], scale: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let diff: Vec<f64> = got.iter().zip(want).map(|(g, w)| g - w).collect();
    let e = norm(&diff) / norm(scale).max(1e-30);
    assert!(e < tol, "{what}: error {e:.3e} relative to the magnitudes exceeds {tol:.0e}");
}

/// Element-wise absolute values.
pub fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

/// Euclidean norm.
pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
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

/// `f` run on a one-thread rayon pool (results must not depend on the
/// thread count).
pub fn one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool").install(f)
}

/// FNV-1a over the f32 bits of some tensors.
pub fn bits_hash(ts: &[&Tensor]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for v in ts.iter().flat_map(|t| t.to_vec_f32().unwrap()) {
        h = (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3);
    }
    h
}
