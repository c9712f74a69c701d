//! `diffuse selftest`: the GPU-vs-CPU comparisons of the test suite, run
//! from inside the library so that one binary checks a GPU (or the
//! emulator) with no test harness beside it.
//!
//! Each op family is run at the awkward sizes and against the bounds of its
//! `per_device!` test (`crates/tensor/tests/<family>.rs`), forward and
//! backward, and at batch 0 (`tests/empty_tensors_per_device.rs`); then a
//! whole U-Net training step of the tiny model (dropout 0.1, and a LoRA step
//! with the base frozen) and DDPM/DDIM sampling are compared with the same
//! computation on the CPU. On the CPU itself the reference is the same code,
//! so there every result must be bit-identical (run-to-run determinism), as
//! in the tests. `quick` drops the largest sizes (the grid-stride wrap of the
//! elementwise kernels, the MNIST-sized convolutions, the 512-channel
//! attention) to keep the emulator fast.

mod model;
mod ops;
mod rng;

use crate::Result;
use diffuse_tensor::{Device, Tensor};
use std::time::Instant;

/// What a comparison accepts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// ||got - want|| / max(||want||, floor) below this.
    Rel(f64),
    /// The same bits (NaN where the reference has NaN).
    Exact,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bound::Rel(b) => write!(f, "{b:.0e}"),
            Bound::Exact => f.write_str("exact"),
        }
    }
}

/// One op of one family: its worst case over every size it was run at.
#[derive(Clone, Debug)]
pub struct Row {
    pub family: &'static str,
    pub op: String,
    pub cases: usize,
    /// The sizes of the case with the largest error.
    pub worst_case: String,
    pub max_err: f64,
    pub bound: Bound,
    /// Why cases failed (empty when the row passed).
    pub failures: Vec<String>,
}

impl Row {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn to_json(&self, device: &str) -> serde_json::Value {
        serde_json::json!({
            "device": device,
            "family": self.family,
            "op": self.op,
            "cases": self.cases,
            "worst_case": self.worst_case,
            "max_rel_err": self.max_err,
            "bound": self.bound.to_string(),
            "pass": self.passed(),
            "failures": self.failures,
        })
    }
}

/// Which checks to run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Leave out the largest sizes (for the emulator in CI).
    pub quick: bool,
}

/// Everything one self-test found.
pub struct Outcome {
    pub device: String,
    pub rows: Vec<Row>,
    pub seconds: f64,
}

impl Outcome {
    pub fn failed(&self) -> usize {
        self.rows.iter().filter(|r| !r.passed()).count()
    }

    /// The table: family, op, cases, worst case, max error, bound, result.
    pub fn table(&self) -> String {
        let head = ["family", "op", "cases", "worst at (sizes)", "max rel err", "bound", "result"];
        let body: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.family.to_string(),
                    r.op.clone(),
                    r.cases.to_string(),
                    r.worst_case.clone(),
                    format!("{:.2e}", r.max_err),
                    r.bound.to_string(),
                    if r.passed() { "pass".into() } else { "FAIL".into() },
                ]
            })
            .collect();
        let mut width = head.map(str::len);
        for row in &body {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells.iter().zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = line(&head.map(String::from)) + "\n";
        for row in &body {
            out += &line(row);
            out.push('\n');
        }
        for r in self.rows.iter().filter(|r| !r.passed()) {
            for f in &r.failures {
                out += &format!("FAIL {} / {}: {f}\n", r.family, r.op);
            }
        }
        out
    }
}

/// The op families, in the order the table lists them.
type Family = fn(&mut Checker, &Options) -> Result<()>;
const FAMILIES: &[(&str, Family)] = &[
    ("elementwise", ops::elementwise),
    ("silu", ops::silu),
    ("linear", ops::linear),
    ("conv2d", ops::conv2d),
    ("group_norm", ops::group_norm),
    ("attention", ops::attention),
    ("bf16 storage", ops::bf16_storage),
    ("layout", ops::layout),
    ("embedding", ops::embedding),
    ("dropout", ops::dropout),
    ("noise", ops::noise),
    ("loss", ops::loss),
    ("optim", ops::optim),
    ("sampling ops", ops::sampling),
    ("empty tensors", ops::empty_tensors),
    ("unet step", model::unet_step),
    ("lora step", model::lora_step),
    ("sampler", model::sampler),
];

/// Runs every check on `device`; `progress` is told each family's name as
/// it starts. A family whose op returns an error becomes a failed row and the
/// next family still runs.
pub fn run(device: &Device, opts: &Options, mut progress: impl FnMut(&str)) -> Outcome {
    let start = Instant::now();
    let mut rows = Vec::new();
    for &(family, body) in FAMILIES {
        progress(family);
        let mut c = Checker { device: device.clone(), family, rows: Vec::new() };
        if let Err(e) = body(&mut c, opts) {
            c.rows.push(Row {
                family,
                op: "(error)".into(),
                cases: 1,
                worst_case: String::new(),
                max_err: f64::NAN,
                bound: Bound::Exact,
                failures: vec![e.to_string()],
            });
        }
        rows.extend(c.rows);
    }
    Outcome { device: device.to_string(), rows, seconds: start.elapsed().as_secs_f64() }
}

/// Collects the comparisons of one family on the device under test.
pub struct Checker {
    device: Device,
    family: &'static str,
    rows: Vec<Row>,
}

impl Checker {
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A copy of a CPU tensor on the device under test.
    pub fn on(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.to_device(&self.device)?)
    }

    fn record(&mut self, op: &str, case: &str, err: f64, bound: Bound, failure: Option<String>) {
        let i = match self.rows.iter().position(|r| r.op == op) {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    family: self.family,
                    op: op.to_string(),
                    cases: 0,
                    worst_case: case.to_string(),
                    max_err: err,
                    bound,
                    failures: Vec::new(),
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[i];
        row.cases += 1;
        // NaN (an unmeasurable case) counts as the worst
        if err.is_nan() || err > row.max_err || row.cases == 1 {
            row.max_err = err;
            row.worst_case = case.to_string();
        }
        if let Some(f) = failure {
            row.failures.push(format!("[{case}] {f}"));
        }
    }

    /// Device result against the CPU reference: same shape, placed on the
    /// device, NaN at the same places, relative error below `tol`. On the
    /// CPU: the same bits.
    pub fn check(&mut self, op: &str, case: &str, got: &Tensor, want: &Tensor, tol: f64) -> Result<()> {
        self.check_floor(op, case, got, want, tol, 0.0)
    }

    /// As `check`, with the reference norm floored at `floor` (outputs that
    /// are analytically zero, where the reference is rounding noise).
    pub fn check_floor(
        &mut self,
        op: &str,
        case: &str,
        got: &Tensor,
        want: &Tensor,
        tol: f64,
        floor: f64,
    ) -> Result<()> {
        if self.device.is_cpu() {
            return self.check_exact(op, case, got, want);
        }
        let bound = Bound::Rel(tol);
        let Some((g, w)) = self.comparable(op, case, got, want, bound)? else { return Ok(()) };
        if g.iter().zip(&w).any(|(a, b)| a.is_nan() != b.is_nan()) {
            self.record(op, case, f64::NAN, bound, Some("NaN where the CPU has none (or the reverse)".into()));
            return Ok(());
        }
        let (g, w): (Vec<f32>, Vec<f32>) = g.into_iter().zip(w).filter(|(a, _)| !a.is_nan()).unzip();
        let err = rel_err_floor(&g, &w, floor);
        let failure = fails_bound(err, tol).then(|| format!("relative error {err:.3e} >= {tol:.0e}"));
        self.record(op, case, err, bound, failure);
        Ok(())
    }

    /// The same bits as the reference.
    pub fn check_exact(&mut self, op: &str, case: &str, got: &Tensor, want: &Tensor) -> Result<()> {
        let Some((g, w)) = self.comparable(op, case, got, want, Bound::Exact)? else { return Ok(()) };
        let same = |a: &f32, b: &f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        let failure = g
            .iter()
            .zip(&w)
            .position(|(a, b)| !same(a, b))
            .map(|i| format!("element {i} is {}, the CPU reference {} (bit-exact expected)", g[i], w[i]));
        let (g, w): (Vec<f32>, Vec<f32>) = g.into_iter().zip(w).filter(|(a, _)| !a.is_nan()).unzip();
        self.record(op, case, rel_err_floor(&g, &w, 0.0), Bound::Exact, failure);
        Ok(())
    }

    /// A scalar comparison (relative, or absolute against a zero reference).
    pub fn check_scalar(&mut self, op: &str, case: &str, got: f64, want: f64, tol: f64) {
        let err = if want == 0.0 { got.abs() } else { ((got - want) / want).abs() };
        let failure = fails_bound(err, tol).then(|| format!("{got} vs {want}: relative error {err:.3e} >= {tol:.0e}"));
        self.record(op, case, err, Bound::Rel(tol), failure);
    }

    /// Placement and shape; the values of both when they can be compared.
    fn comparable(
        &mut self,
        op: &str,
        case: &str,
        got: &Tensor,
        want: &Tensor,
        bound: Bound,
    ) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        if got.device().is_cpu() != self.device.is_cpu() {
            let why = format!("the result is on {}, not on the device under test", got.device());
            self.record(op, case, f64::NAN, bound, Some(why));
            return Ok(None);
        }
        if got.dims() != want.dims() {
            let why = format!("shape {:?}, the CPU reference {:?}", got.dims(), want.dims());
            self.record(op, case, f64::NAN, bound, Some(why));
            return Ok(None);
        }
        Ok(Some((got.to_vec_f32()?, want.to_vec_f32()?)))
    }
}

/// Whether an error fails its bound (a NaN error always does).
fn fails_bound(err: f64, tol: f64) -> bool {
    err.is_nan() || err >= tol
}

/// ||got - want|| / max(||want||, floor), in f64 (the absolute error when
/// both norms are zero).
fn rel_err_floor(got: &[f32], want: &[f32], floor: f64) -> f64 {
    // (an empty sum is -0.0)
    let num = got.iter().zip(want).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>().sqrt().abs();
    let den = norm_f32(want).max(floor);
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

fn norm_f32(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_vec(v.to_vec(), [v.len()]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn emu_checker() -> Checker {
        let device = diffuse_tensor::gpu::emu::emu_device().unwrap_or_else(|e| panic!("{e}"));
        Checker { device, family: "test", rows: Vec::new() }
    }

    #[test]
    fn a_wrong_result_fails_its_row() {
        let mut c = emu_checker();
        let want = t(&[1.0, 2.0, 3.0]);
        let close = c.on(&t(&[1.0, 2.0, 3.000_001])).unwrap_or_else(|e| panic!("{e}"));
        let wrong = c.on(&t(&[1.0, 2.0, 3.1])).unwrap_or_else(|e| panic!("{e}"));
        c.check("op", "close", &close, &want, 1e-5).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.rows[0].passed(), "{:?}", c.rows[0]);
        c.check("op", "wrong", &wrong, &want, 1e-5).unwrap_or_else(|e| panic!("{e}"));
        let row = &c.rows[0];
        assert!(!row.passed());
        assert_eq!((row.cases, row.worst_case.as_str()), (2, "wrong"));
        // ||(0, 0, 0.1)|| / ||(1, 2, 3)||
        assert!((row.max_err - 0.1 / 14f64.sqrt()).abs() < 1e-6, "{}", row.max_err);
    }

    #[test]
    fn nan_placement_and_shape_mismatches_fail() {
        let mut c = emu_checker();
        let want = t(&[1.0, 2.0]);
        let nan = c.on(&t(&[1.0, f32::NAN])).unwrap_or_else(|e| panic!("{e}"));
        c.check("nan", "", &nan, &want, 1.0).unwrap_or_else(|e| panic!("{e}"));
        // a result left on the host is not the device's
        c.check("host", "", &want, &want, 1.0).unwrap_or_else(|e| panic!("{e}"));
        let longer = c.on(&t(&[1.0, 2.0, 3.0])).unwrap_or_else(|e| panic!("{e}"));
        c.check("shape", "", &longer, &want, 1.0).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.rows.iter().all(|r| !r.passed()), "{:?}", c.rows);
        c.check_scalar("scalar", "", f64::NAN, 1.0, 1.0);
        assert!(!c.rows[3].passed());
    }

    #[test]
    fn on_the_cpu_every_check_is_bit_exact() {
        let mut c = Checker { device: Device::Cpu, family: "test", rows: Vec::new() };
        let want = t(&[1.0, 2.0]);
        c.check("op", "", &t(&[1.0, 2.000_000_2]), &want, 1e-3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.rows[0].bound, Bound::Exact);
        assert!(!c.rows[0].passed());
    }
}
