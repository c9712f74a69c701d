//! Shared support of the GPU-vs-CPU tests (tests/gpu_vs_cpu_*.rs): which GPU
//! devices to run on, seeded test data, relative errors, and a per-op report
//! of the worst error seen.
//!
//! Devices: the real CUDA device 0 when `cuda_device(0)` opens, plus the CUDA
//! emulator (thread order from `DIFFUSE_EMU_ORDER`, default forward). With
//! neither, a test prints `SKIPPED: <reason>` and returns.
//!
//! Report lines go straight to the process's stderr handle (not through
//! `eprintln!`, which libtest captures), so `cargo test` logs always show
//! which device and thread order ran and the worst error per op.
#![allow(dead_code)]

use diffuse_tensor::gpu::cuda::cuda_device;
use diffuse_tensor::gpu::emu::{emu_device, ThreadOrder};
use diffuse_tensor::{Device, Tensor};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::OnceLock;

/// A line on stderr that libtest does not capture.
pub fn log(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

/// One GPU to compare against the CPU, with a label for the log.
#[derive(Clone)]
pub struct GpuUnderTest {
    pub label: String,
    pub device: Device,
}

struct Found {
    devices: Vec<GpuUnderTest>,
    why_none: String,
}

fn emu_order() -> String {
    match ThreadOrder::from_env() {
        Ok(Some(o)) => o.to_string(),
        Ok(None) => "forward (default)".into(),
        Err(e) => format!("invalid DIFFUSE_EMU_ORDER: {e}"),
    }
}

fn find() -> &'static Found {
    static FOUND: OnceLock<Found> = OnceLock::new();
    FOUND.get_or_init(|| {
        let mut devices = Vec::new();
        let mut why = Vec::new();
        match cuda_device(0) {
            Ok(d) => devices.push(GpuUnderTest { label: d.to_string(), device: d }),
            Err(e) => why.push(format!("no CUDA device ({e})")),
        }
        match emu_device() {
            Ok(d) => devices.push(GpuUnderTest { label: format!("emu (thread order {})", emu_order()), device: d }),
            Err(e) => why.push(format!("no emulator ({e})")),
        }
        let labels: Vec<&str> = devices.iter().map(|d| d.label.as_str()).collect();
        log(&format!("gpu_vs_cpu: devices under test: [{}]; {}", labels.join(", "), why.join("; ")));
        Found { devices, why_none: why.join("; ") }
    })
}

/// The GPUs to test on, or `None` after printing `SKIPPED: <reason>`.
pub fn gpus(test: &str) -> Option<Vec<GpuUnderTest>> {
    let f = find();
    if f.devices.is_empty() {
        log(&format!("SKIPPED: {test}: {}", f.why_none));
        return None;
    }
    Some(f.devices.clone())
}

/// SplitMix64: test data independent of the code under test.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
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

/// A copy of `t` on `dev`.
pub fn on(t: &Tensor, dev: &Device) -> Tensor {
    t.to_device(dev).unwrap()
}

/// ||got - want|| / max(||want||, floor), in f64.
pub fn rel_err_floor(got: &[f32], want: &[f32], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "rel_err: lengths differ");
    let num: f64 = got.iter().zip(want).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>().sqrt();
    let den: f64 = want.iter().map(|&b| (b as f64).powi(2)).sum::<f64>().sqrt();
    let den = den.max(floor);
    // (an empty sum is -0.0)
    if den == 0.0 {
        num.abs()
    } else {
        num.abs() / den
    }
}

pub fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
}

/// The worst error per op of one test on one device; printed on drop.
pub struct Report {
    test: String,
    device: String,
    worst: BTreeMap<String, (f64, usize, String)>,
}

impl Report {
    pub fn new(test: &str, gpu: &GpuUnderTest) -> Self {
        Report { test: test.into(), device: gpu.label.clone(), worst: BTreeMap::new() }
    }

    fn record(&mut self, op: &str, case: &str, err: f64) {
        let e = self.worst.entry(op.to_string()).or_insert((0.0, 0, String::new()));
        e.1 += 1;
        if err > e.0 || e.1 == 1 {
            e.0 = err;
            e.2 = case.to_string();
        }
    }

    /// Compares a GPU result with the CPU reference: same shape, the result
    /// really lives on the GPU, relative error below `tol`. Returns the error.
    pub fn check(&mut self, op: &str, case: &str, got: &Tensor, want: &Tensor, tol: f64) -> f64 {
        self.check_floor(op, case, got, want, tol, 0.0)
    }

    /// As `check`, with the reference norm floored at `floor` (for outputs
    /// that are analytically zero, where the reference is rounding noise).
    pub fn check_floor(&mut self, op: &str, case: &str, got: &Tensor, want: &Tensor, tol: f64, floor: f64) -> f64 {
        assert!(!got.device().is_cpu(), "{op} [{case}] on {}: the result is a host tensor", self.device);
        assert_eq!(got.dims(), want.dims(), "{op} [{case}] on {}: shape", self.device);
        let (g, w) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
        assert!(
            g.iter().zip(&w).all(|(a, b)| a.is_nan() == b.is_nan()),
            "{op} [{case}] on {}: NaN where the CPU has none (or the reverse)",
            self.device
        );
        let (g, w): (Vec<f32>, Vec<f32>) = g.into_iter().zip(w).filter(|(a, _)| !a.is_nan()).unzip();
        let err = rel_err_floor(&g, &w, floor);
        self.record(op, case, err);
        assert!(err < tol, "{op} [{case}] on {}: relative error {err:.3e} >= {tol:.0e}", self.device);
        err
    }

    /// Bit-identical results.
    pub fn check_exact(&mut self, op: &str, case: &str, got: &Tensor, want: &Tensor) {
        assert!(!got.device().is_cpu(), "{op} [{case}] on {}: the result is a host tensor", self.device);
        assert_eq!(got.dims(), want.dims(), "{op} [{case}] on {}: shape", self.device);
        let (g, w) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
        let bad = g.iter().zip(&w).position(|(a, b)| a.to_bits() != b.to_bits());
        if let Some(i) = bad {
            panic!(
                "{op} [{case}] on {}: element {i} is {} on the GPU, {} on the CPU (bit-exact expected)",
                self.device, g[i], w[i]
            );
        }
        self.record(op, case, rel_err_floor(&g, &w, 0.0));
    }

    /// A scalar (f64) comparison.
    pub fn check_scalar(&mut self, op: &str, case: &str, got: f64, want: f64, tol: f64) -> f64 {
        let err = if want == 0.0 { got.abs() } else { ((got - want) / want).abs() };
        self.record(op, case, err);
        assert!(err < tol, "{op} [{case}] on {}: {got} vs {want}, relative error {err:.3e} >= {tol:.0e}", self.device);
        err
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for (op, (err, n, case)) in &self.worst {
            log(&format!(
                "gpu_vs_cpu {} on {}: {op:<32} worst rel err {err:.2e} over {n} case(s) (at {case})",
                self.test, self.device
            ));
        }
    }
}
