//! Tests per device: one test body taking a device, instantiated by
//! `per_device!` (modelled on candle's `test_device!`) as `<name>_cpu`,
//! `<name>_emu` (the CUDA emulator, thread order from `DIFFUSE_EMU_ORDER`)
//! and `<name>_cuda` (the real GPU 0; ignored unless asked for, so a machine
//! without a GPU shows it as ignored, with the reason, never as passed).
//! A body compares the device's results with the CPU reference through a
//! `Report`; on the CPU itself that reference is the same code, so there the
//! result must be bit-identical (run-to-run determinism).
//!
//! Shared by this crate's tests and the workspace's tests/ (which include
//! this file by path). Report lines go straight to the process's stderr
//! handle (not through `eprintln!`, which libtest captures), so `cargo test`
//! logs show which device and thread order ran and the worst error per op.
#![allow(dead_code)]

use diffuse_tensor::gpu::cuda::cuda_device;
use diffuse_tensor::gpu::emu::{emu_device, ThreadOrder};
use diffuse_tensor::{Device, Tensor};
use std::collections::BTreeMap;
use std::io::Write;

/// Why `_cuda` tests are ignored by default.
pub const NEEDS_GPU: &str = "needs an NVIDIA GPU and libcuda; run with --include-ignored on a GPU machine";

/// Instantiates the test body `$body(&DeviceUnderTest)` once per device:
/// `per_device!(body, body_cpu, body_emu, body_cuda);`
macro_rules! per_device {
    ($body:ident, $cpu:ident, $emu:ident, $cuda:ident) => {
        #[test]
        fn $cpu() {
            $body(&$crate::common::open($crate::common::Backend::Cpu));
        }

        #[test]
        fn $emu() {
            $body(&$crate::common::open($crate::common::Backend::Emu));
        }

        #[test]
        #[ignore = "needs an NVIDIA GPU and libcuda; run with --include-ignored on a GPU machine"]
        fn $cuda() {
            $body(&$crate::common::open($crate::common::Backend::Cuda));
        }
    };
}
pub(crate) use per_device;

/// A line on stderr that libtest does not capture.
pub fn log(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

/// The devices a per-device test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Emu,
    Cuda,
}

/// One device under test, with a label for the log.
#[derive(Clone)]
pub struct DeviceUnderTest {
    pub label: String,
    pub device: Device,
    pub backend: Backend,
}

impl DeviceUnderTest {
    pub fn is_cpu(&self) -> bool {
        self.backend == Backend::Cpu
    }

    /// A device other than this one, for mixed-device error checks: the
    /// emulator for the CPU, the CPU for a GPU.
    pub fn other(&self) -> Device {
        if self.is_cpu() {
            open(Backend::Emu).device
        } else {
            Device::Cpu
        }
    }
}

fn emu_order() -> String {
    match ThreadOrder::from_env() {
        Ok(Some(o)) => o.to_string(),
        Ok(None) => "forward (default)".into(),
        Err(e) => format!("invalid DIFFUSE_EMU_ORDER: {e}"),
    }
}

/// Opens `backend`'s device. A device that cannot be opened fails the test
/// with the reason: a test that was asked to run on a device never passes
/// without it.
pub fn open(backend: Backend) -> DeviceUnderTest {
    let (device, label) = match backend {
        Backend::Cpu => (Device::Cpu, "cpu".to_string()),
        Backend::Emu => match emu_device() {
            Ok(d) => (d, format!("emu (thread order {})", emu_order())),
            Err(e) => panic!("the CUDA emulator does not start: {e}"),
        },
        Backend::Cuda => match cuda_device(0) {
            Ok(d) => {
                let label = d.to_string();
                (d, label)
            }
            Err(e) => panic!("no CUDA device ({e}): a _cuda test {NEEDS_GPU}"),
        },
    };
    DeviceUnderTest { label, device, backend }
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

pub fn norm_f32(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
}

/// The worst error per op of one test on one device; printed on drop.
pub struct Report {
    test: String,
    device: String,
    on_cpu: bool,
    /// `check` demands the CPU's bits here (see [`Report::exact_on`]).
    exact: bool,
    worst: BTreeMap<String, (f64, usize, String)>,
}

impl Report {
    pub fn new(test: &str, dut: &DeviceUnderTest) -> Self {
        Report {
            test: test.into(),
            device: dut.label.clone(),
            on_cpu: dut.is_cpu(),
            exact: dut.is_cpu(),
            worst: BTreeMap::new(),
        }
    }

    /// Every `check` of this report demands the CPU reference's bits when the
    /// device under test is one of `backends` (the determinism claims of
    /// ARCHITECTURE.md: ops whose kernels compute the CPU's expressions, with
    /// no FMA contraction and no CUDA math library call, on the emulator and
    /// CUDA; ops calling expf/sin/cos on the emulator only, whose libm is the
    /// CPU's).
    pub fn exact_on(mut self, dut: &DeviceUnderTest, backends: &[Backend]) -> Self {
        self.exact |= backends.contains(&dut.backend);
        self
    }

    /// The result lives on the device under test (not silently on the host).
    fn check_placement(&self, op: &str, case: &str, got: &Tensor) {
        assert_eq!(
            got.device().is_cpu(),
            self.on_cpu,
            "{op} [{case}] on {}: the result is on {}",
            self.device,
            got.device()
        );
    }

    fn record(&mut self, op: &str, case: &str, err: f64) {
        let e = self.worst.entry(op.to_string()).or_insert((0.0, 0, String::new()));
        e.1 += 1;
        if err > e.0 || e.1 == 1 {
            e.0 = err;
            e.2 = case.to_string();
        }
    }

    /// Compares a device's result with the CPU reference: same shape, the
    /// result really lives on the device, relative error below `tol` (on the
    /// CPU: the same bits). Returns the error.
    pub fn check(&mut self, op: &str, case: &str, got: &Tensor, want: &Tensor, tol: f64) -> f64 {
        self.check_floor(op, case, got, want, tol, 0.0)
    }

    /// As `check`, with the reference norm floored at `floor` (for outputs
    /// that are analytically zero, where the reference is rounding noise).
    pub fn check_floor(&mut self, op: &str, case: &str, got: &Tensor, want: &Tensor, tol: f64, floor: f64) -> f64 {
        if self.exact {
            self.check_exact(op, case, got, want);
            return 0.0;
        }
        self.check_placement(op, case, got);
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

    /// As `check`, with a tolerance even where the report is exact (a
    /// reduction summed in another order than the CPU's); the CPU itself
    /// still must give its own bits.
    pub fn check_tol(&mut self, op: &str, case: &str, got: &Tensor, want: &Tensor, tol: f64) -> f64 {
        let exact = std::mem::replace(&mut self.exact, self.on_cpu);
        let err = self.check(op, case, got, want, tol);
        self.exact = exact;
        err
    }

    /// Bit-identical results (NaN where the reference has NaN).
    pub fn check_exact(&mut self, op: &str, case: &str, got: &Tensor, want: &Tensor) {
        self.check_placement(op, case, got);
        assert_eq!(got.dims(), want.dims(), "{op} [{case}] on {}: shape", self.device);
        let (g, w) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
        let same = |a: &f32, b: &f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        if let Some(i) = g.iter().zip(&w).position(|(a, b)| !same(a, b)) {
            panic!(
                "{op} [{case}] on {}: element {i} is {}, the CPU reference {} (bit-exact expected)",
                self.device, g[i], w[i]
            );
        }
        let (g, w): (Vec<f32>, Vec<f32>) = g.into_iter().zip(w).filter(|(a, _)| !a.is_nan()).unzip();
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
                "per-device {} on {}: {op:<32} worst rel err {err:.2e} over {n} case(s) (at {case})",
                self.test, self.device
            ));
        }
    }
}
