//! add, sub, mul, scale, add_scaled and the in-place ops: f64 oracles,
//! finite-difference gradients, determinism and error cases.

mod common;
use common::*;
use diffuse_tensor::{ops, Tensor};
use proptest::prelude::*;

/// Data exactly representable in f32, so the oracle sees the op's inputs.
fn round32(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| x as f32 as f64).collect()
}

fn oracle_zip(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        out.push(f(a[i], b[i]));
    }
    out
}

/// A binary op under test, as used by the gradient checks.
type BinOp<'a> = &'a dyn Fn(&Tensor, &Tensor) -> Tensor;

fn nchw() -> impl Strategy<Value = Vec<usize>> {
    (awkward(3), awkward(13), awkward(9), awkward(9)).prop_map(|(n, c, h, w)| vec![n, c, h, w])
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn binary_ops_match_f64_oracle(shape in nchw(), seed in any::<u64>(), s in -3.0f64..3.0) {
        let mut rng = TestRng::new(seed);
        let n = numel(&shape);
        let (a, b) = (round32(rng.vec(n)), round32(rng.vec(n)));
        let s = s as f32 as f64;
        let (ta, tb) = (t32(&a, &shape), t32(&b, &shape));
        assert_close("add", &v64(&ops::add(&ta, &tb).unwrap()), &oracle_zip(&a, &b, |x, y| x + y), 1e-5);
        assert_close("sub", &v64(&ops::sub(&ta, &tb).unwrap()), &oracle_zip(&a, &b, |x, y| x - y), 1e-5);
        assert_close("mul", &v64(&ops::mul(&ta, &tb).unwrap()), &oracle_zip(&a, &b, |x, y| x * y), 1e-5);
        // a + s b rounds s b first: measured against |a| + |s b|, since the
        // sum may cancel (add, sub and mul round once, so their own size is fine).
        assert_close_scaled(
            "add_scaled",
            &v64(&ops::add_scaled(&ta, &tb, s).unwrap()),
            &oracle_zip(&a, &b, |x, y| x + s * y),
            &oracle_zip(&a, &b, |x, y| x.abs() + (s * y).abs()),
            1e-5,
        );
        assert_close("scale", &v64(&ops::scale(&ta, s).unwrap()), &oracle_zip(&a, &a, |x, _| s * x), 1e-5);
    }

    #[test]
    fn in_place_ops_match_their_out_of_place_twins(shape in nchw(), seed in any::<u64>(), s in -3.0f64..3.0) {
        let mut rng = TestRng::new(seed);
        let n = numel(&shape);
        let (a, b) = (rng.vec(n), rng.vec(n));
        for make in [t32 as fn(&[f64], &[usize]) -> Tensor, t64] {
            let (ta, tb) = (make(&a, &shape), make(&b, &shape));
            let mut acc = ta.clone();
            ops::add_in_place(&mut acc, &tb).unwrap();
            prop_assert_eq!(v64(&acc), v64(&ops::add(&ta, &tb).unwrap()));
            ops::scale_in_place(&mut acc, s).unwrap();
            prop_assert_eq!(v64(&acc), v64(&ops::scale(&ops::add(&ta, &tb).unwrap(), s).unwrap()));
            prop_assert_eq!(acc.shape(), ta.shape());
            prop_assert_eq!(acc.dtype(), ta.dtype());
        }
    }

    /// The gradients of <op(a, b), r> are what a backward pass builds from
    /// these same ops: d/da add = r, d/db sub = -r, d/da mul = r*b, d/da scale = s r.
    #[test]
    fn gradients_match_finite_differences(n in awkward(40), seed in any::<u64>(), s in -3.0f64..3.0) {
        let mut rng = TestRng::new(seed);
        let (a, b, r) = (rng.vec(n), rng.vec(n), rng.vec(n));
        let sh = [n];
        let f = |op: BinOp, a: &[f64], b: &[f64]| dot(&v64(&op(&t64(a, &sh), &t64(b, &sh))), &r);
        let add = |x: &Tensor, y: &Tensor| ops::add(x, y).unwrap();
        let sub = |x: &Tensor, y: &Tensor| ops::sub(x, y).unwrap();
        let mul = |x: &Tensor, y: &Tensor| ops::mul(x, y).unwrap();
        let add_scaled = |x: &Tensor, y: &Tensor| ops::add_scaled(x, y, s).unwrap();
        let scale = |x: &Tensor, _: &Tensor| ops::scale(x, s).unwrap();
        let tr = t64(&r, &sh);
        let checks: [(&str, BinOp, bool, Tensor); 8] = [
            ("add da", &add, true, tr.clone()),
            ("add db", &add, false, tr.clone()),
            ("sub da", &sub, true, tr.clone()),
            ("sub db", &sub, false, ops::scale(&tr, -1.0).unwrap()),
            ("mul da", &mul, true, ops::mul(&tr, &t64(&b, &sh)).unwrap()),
            ("mul db", &mul, false, ops::mul(&tr, &t64(&a, &sh)).unwrap()),
            ("add_scaled db", &add_scaled, false, ops::scale(&tr, s).unwrap()),
            ("scale dx", &scale, true, ops::scale(&tr, s).unwrap()),
        ];
        for (what, op, wrt_a, grad) in checks {
            let fd = if wrt_a {
                fd_grad(&a, 1e-5, |x| f(op, x, &b))
            } else {
                fd_grad(&b, 1e-5, |y| f(op, &a, y))
            };
            assert_close(what, &v64(&grad), &fd, 1e-6);
        }
    }
}

#[test]
fn f64_ops_are_exact() {
    let mut rng = TestRng::new(3);
    let (a, b) = (rng.vec(1001), rng.vec(1001));
    let (ta, tb) = (t64(&a, &[7, 11, 13]), t64(&b, &[7, 11, 13]));
    assert_eq!(v64(&ops::add_scaled(&ta, &tb, 0.25).unwrap()), oracle_zip(&a, &b, |x, y| x + 0.25 * y));
    assert_eq!(v64(&ops::mul(&ta, &tb).unwrap()), oracle_zip(&a, &b, |x, y| x * y));
}

#[test]
fn results_are_bit_identical_across_runs_and_thread_counts() {
    // larger than one parallel chunk, and not a multiple of it
    let n = 100_003;
    let mut rng = TestRng::new(11);
    let (a, b) = (t32(&rng.vec(n), &[n]), t32(&rng.vec(n), &[n]));
    let run = || ops::add_scaled(&a, &b, 0.3).unwrap().to_vec_f32().unwrap();
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    assert_eq!(run(), run());
    assert_eq!(run(), one_thread);
}

#[test]
fn empty_tensors_are_fine() {
    let e = t32(&[], &[0, 3]);
    assert_eq!(ops::add(&e, &e).unwrap().dims(), &[0, 3]);
    assert_eq!(ops::scale(&e, 2.0).unwrap().numel(), 0);
}

#[test]
fn mismatches_are_errors() {
    let a = t32(&[1.0, 2.0, 3.0], &[3]);
    let b = t32(&[1.0, 2.0], &[2]);
    let a64 = t64(&[1.0, 2.0, 3.0], &[3]);
    let same_numel_other_shape = t32(&[1.0, 2.0, 3.0], &[3, 1]);
    for r in [ops::add(&a, &b), ops::sub(&a, &b), ops::mul(&a, &b), ops::add_scaled(&a, &b, 1.0)] {
        assert!(r.unwrap_err().to_string().contains("shape mismatch"));
    }
    assert!(ops::add(&a, &same_numel_other_shape).is_err());
    assert!(ops::mul(&a, &a64).unwrap_err().to_string().contains("dtype mismatch"));
    let mut acc = a.clone();
    assert!(ops::add_in_place(&mut acc, &b).is_err());
    assert!(ops::add_in_place(&mut acc, &a64).is_err());
    assert_eq!(v64(&acc), vec![1.0, 2.0, 3.0], "a failed in-place op must not write");
}

// ------------------------------------- every device against the CPU reference

/// Tolerance of a device's result against the CPU reference (relative, whole tensor).
const DEVICE_TOL: f64 = 1e-5;

/// Lengths: tiny, odd, and one past the 8192-block grid cap (2,097,152
/// threads), so the grid-stride loops wrap.
const DEVICE_LENGTHS: [usize; 4] = [1, 7, 1003, 8192 * 256 + 13];

fn elementwise_ops(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    let mut r = Report::new("elementwise", dut).exact_on(dut, &[Backend::Emu, Backend::Cuda]);
    let mut rng = TensorRng::new(51);
    for len in DEVICE_LENGTHS {
        let case = format!("len {len}");
        // a rank-3 shape for the small ones, flat for the long one
        let shape: Vec<usize> = if len == 1003 { vec![17, 59] } else { vec![len] };
        let (a, b) = (rng.tensor(&shape), rng.tensor(&shape));
        let (ag, bg) = (on(&a, dev), on(&b, dev));
        r.check("add", &case, &ops::add(&ag, &bg).unwrap(), &ops::add(&a, &b).unwrap(), DEVICE_TOL);
        r.check("sub", &case, &ops::sub(&ag, &bg).unwrap(), &ops::sub(&a, &b).unwrap(), DEVICE_TOL);
        r.check("mul", &case, &ops::mul(&ag, &bg).unwrap(), &ops::mul(&a, &b).unwrap(), DEVICE_TOL);
        let s = -0.3712345678901;
        r.check(
            "add_scaled",
            &case,
            &ops::add_scaled(&ag, &bg, s).unwrap(),
            &ops::add_scaled(&a, &b, s).unwrap(),
            DEVICE_TOL,
        );
        r.check("scale", &case, &ops::scale(&ag, s).unwrap(), &ops::scale(&a, s).unwrap(), DEVICE_TOL);

        let (mut acc, mut accg) = (a.clone(), ag.clone());
        ops::add_in_place(&mut acc, &b).unwrap();
        ops::add_in_place(&mut accg, &bg).unwrap();
        r.check("add_in_place", &case, &accg, &acc, DEVICE_TOL);
        ops::scale_in_place(&mut acc, 1.7).unwrap();
        ops::scale_in_place(&mut accg, 1.7).unwrap();
        r.check("scale_in_place", &case, &accg, &acc, DEVICE_TOL);
        // the clone `ag` shares its buffer with `accg` before the writes:
        // in-place ops must not show through it
        r.check("in-place leaves clones alone", &case, &ag, &a, 1e-30);
    }
}

per_device!(elementwise_ops, elementwise_ops_cpu, elementwise_ops_emu, elementwise_ops_cuda);

fn in_place_ops_with_aliased_operands(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    let mut r = Report::new("elementwise", dut).exact_on(dut, &[Backend::Emu, Backend::Cuda]);
    let a = TensorRng::new(52).tensor(&[3, 5]);
    let (mut acc, mut accg) = (a.clone(), on(&a, dev));
    // acc += (a clone sharing acc's buffer on the GPU)
    let alias = accg.clone();
    ops::add_in_place(&mut accg, &alias).unwrap();
    ops::add_in_place(&mut acc, &a).unwrap();
    r.check("add_in_place (aliased)", "x += x", &accg, &acc, DEVICE_TOL);
    r.check("add_in_place (aliased)", "the alias is unchanged", &alias, &a, 1e-30);
}

per_device!(
    in_place_ops_with_aliased_operands,
    in_place_ops_with_aliased_operands_cpu,
    in_place_ops_with_aliased_operands_emu,
    in_place_ops_with_aliased_operands_cuda
);

fn elementwise_rejects_mismatches_before_dispatch(dut: &DeviceUnderTest) {
    let mut rng = TensorRng::new(53);
    let dev = &dut.device;
    let a = on(&rng.tensor(&[3, 4]), dev);
    assert!(ops::add(&a, &on(&rng.tensor(&[4, 3]), dev)).is_err(), "shape mismatch on {}", dut.label);
    let elsewhere = on(&rng.tensor(&[3, 4]), &dut.other());
    let e = ops::add(&a, &elsewhere).unwrap_err().to_string();
    assert!(e.contains("different devices"), "{e}");
    let mut acc = a.clone();
    assert!(ops::add_in_place(&mut acc, &elsewhere).is_err());
    let f64_t = Tensor::from_vec(vec![0f64; 12], [3, 4]).unwrap();
    assert!(ops::mul(&a, &f64_t).is_err(), "dtype/device mismatch on {}", dut.label);
}

per_device!(
    elementwise_rejects_mismatches_before_dispatch,
    elementwise_rejects_mismatches_before_dispatch_cpu,
    elementwise_rejects_mismatches_before_dispatch_emu,
    elementwise_rejects_mismatches_before_dispatch_cuda
);
