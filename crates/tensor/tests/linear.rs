//! Linear layer: f64 oracle, finite differences, adjoint (bilinearity)
//! properties, determinism, error cases.

mod common;
use common::*;
use diffuse_tensor::ops;
use diffuse_tensor::Tensor;
use proptest::prelude::*;

/// A linear problem: x [n, d_in], w [d_out, d_in], b [d_out].
#[derive(Clone, Debug)]
struct Case {
    n: usize,
    d_in: usize,
    d_out: usize,
    x: Vec<f64>,
    w: Vec<f64>,
    b: Vec<f64>,
}

impl Case {
    fn new(n: usize, d_in: usize, d_out: usize, seed: u64) -> Case {
        let mut rng = TestRng::new(seed);
        Case { n, d_in, d_out, x: rng.vec(n * d_in), w: rng.vec(d_out * d_in), b: rng.vec(d_out) }
    }

    fn rounded(&self) -> Case {
        let r = |v: &Vec<f64>| v.iter().map(|&x| x as f32 as f64).collect();
        Case { x: r(&self.x), w: r(&self.w), b: r(&self.b), ..self.clone() }
    }

    fn forward(&self, t: fn(&[f64], &[usize]) -> Tensor, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
        let bias = b.map(|b| t(b, &[self.d_out]));
        let y = ops::linear_forward(&t(x, &[self.n, self.d_in]), &t(w, &[self.d_out, self.d_in]), bias.as_ref());
        v64(&y.unwrap())
    }

    fn backward64(&self, dy: &[f64]) -> ops::LinearGrads {
        let (x, w) = (t64(&self.x, &[self.n, self.d_in]), t64(&self.w, &[self.d_out, self.d_in]));
        ops::linear_backward(&t64(dy, &[self.n, self.d_out]), &x, &w).unwrap()
    }
}

/// Naive f64 `y = x w^T (+ b)`.
fn oracle(cs: &Case, with_bias: bool) -> Vec<f64> {
    let mut y = vec![0.0; cs.n * cs.d_out];
    for i in 0..cs.n {
        for o in 0..cs.d_out {
            let mut acc = if with_bias { cs.b[o] } else { 0.0 };
            for k in 0..cs.d_in {
                acc += cs.x[i * cs.d_in + k] * cs.w[o * cs.d_in + k];
            }
            y[i * cs.d_out + o] = acc;
        }
    }
    y
}

fn case_strategy(max_n: usize, max_d: usize) -> impl Strategy<Value = Case> {
    (awkward(max_n), awkward(max_d), awkward(max_d), any::<u64>()).prop_map(|(n, i, o, s)| Case::new(n, i, o, s))
}

proptest! {
    #![proptest_config(proptest_config(64))]

    #[test]
    fn forward_f32_matches_f64_oracle(cs in case_strategy(17, 70), with_bias in any::<bool>()) {
        let cs = cs.rounded();
        let y = cs.forward(t32, &cs.x, &cs.w, with_bias.then_some(&cs.b[..]));
        // Measured against sum_k |x| |w| + |b|: one output of a few terms
        // may cancel to almost nothing (n=1, d_in=37, d_out=1 once did).
        let magnitudes = Case { x: abs(&cs.x), w: abs(&cs.w), b: abs(&cs.b), ..cs.clone() };
        assert_close_scaled("linear forward", &y, &oracle(&cs, with_bias), &oracle(&magnitudes, with_bias), 1e-5);
    }

    #[test]
    fn backward_matches_finite_differences(cs in case_strategy(5, 13)) {
        let r = TestRng::new(!cs.x.len() as u64).vec(cs.n * cs.d_out);
        let g = cs.backward64(&r);
        let h = 1e-5;
        let fx = fd_grad(&cs.x, h, |x| dot(&cs.forward(t64, x, &cs.w, Some(&cs.b)), &r));
        let fw = fd_grad(&cs.w, h, |w| dot(&cs.forward(t64, &cs.x, w, Some(&cs.b)), &r));
        let fb = fd_grad(&cs.b, h, |b| dot(&cs.forward(t64, &cs.x, &cs.w, Some(b)), &r));
        assert_close("linear dx vs finite differences", &v64(&g.dx), &fx, 1e-6);
        assert_close("linear dw vs finite differences", &v64(&g.dw), &fw, 1e-6);
        assert_close("linear db vs finite differences", &v64(&g.db), &fb, 1e-6);
    }

    /// y is linear in x (for fixed w) and in w (for fixed x), so
    /// <y(u), r> = <u, J^T r> exactly for any direction u.
    #[test]
    fn backward_is_adjoint_in_x_and_in_w(cs in case_strategy(17, 70)) {
        let mut rng = TestRng::new(cs.w.len() as u64);
        let (r, ux, uw) = (rng.vec(cs.n * cs.d_out), rng.vec(cs.x.len()), rng.vec(cs.w.len()));
        let g = cs.backward64(&r);
        let jx = dot(&cs.forward(t64, &ux, &cs.w, None), &r);
        let jw = dot(&cs.forward(t64, &cs.x, &uw, None), &r);
        assert_close("<W u, r> vs <u, dx>", &[dot(&ux, &v64(&g.dx))], &[jx], 1e-10);
        assert_close("<U x, r> vs <U, dw>", &[dot(&uw, &v64(&g.dw))], &[jw], 1e-10);
        // The bias enters as b * ones: <db, u> = <sum over rows of r, u>.
        let ub = rng.vec(cs.d_out);
        let jb: f64 = (0..cs.n).map(|i| dot(&r[i * cs.d_out..(i + 1) * cs.d_out], &ub)).sum();
        assert_close("<1 u, r> vs <u, db>", &[dot(&ub, &v64(&g.db))], &[jb], 1e-10);
    }
}

/// The shape that once failed CI (n=1, d_in=37, d_out=1), with the last
/// weight chosen so that the only output cancels to about 1e-6 of its terms.
#[test]
fn nearly_cancelling_output_is_within_rounding_of_its_terms() {
    let mut cs = Case::new(1, 37, 1, 2024).rounded();
    let partial: f64 = (0..36).map(|k| cs.x[k] * cs.w[k]).sum();
    cs.w[36] = ((1e-6 - partial - cs.b[0]) / cs.x[36]) as f32 as f64;
    let y = cs.forward(t32, &cs.x, &cs.w, Some(&cs.b));
    let magnitudes = Case { x: abs(&cs.x), w: abs(&cs.w), b: abs(&cs.b), ..cs.clone() };
    assert_close_scaled("linear forward, cancelling", &y, &oracle(&cs, true), &oracle(&magnitudes, true), 1e-5);
}

#[test]
fn forward_and_backward_are_bit_identical_across_runs() {
    for &(n, i, o) in &[(64, 128, 128), (97, 131, 67)] {
        let cs = Case::new(n, i, o, 5);
        let dy = TestRng::new(6).vec(n * o);
        let run = || {
            let (x, w) = (t32(&cs.x, &[n, i]), t32(&cs.w, &[o, i]));
            let y = ops::linear_forward(&x, &w, Some(&t32(&cs.b, &[o]))).unwrap();
            let g = ops::linear_backward(&t32(&dy, &[n, o]), &x, &w).unwrap();
            [y, g.dx, g.dw, g.db]
                .iter()
                .map(|t| t.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run(), "linear {n}x{i}->{o} is not deterministic");
    }
}

/// Every output of a forward and backward big enough to split across threads.
fn thread_check_outputs() -> Vec<Tensor> {
    let (n, i, o) = (512, 384, 640);
    let cs = Case::new(n, i, o, 23);
    let dy = TestRng::new(24).vec(n * o);
    let (x, w) = (t32(&cs.x, &[n, i]), t32(&cs.w, &[o, i]));
    let y = ops::linear_forward(&x, &w, Some(&t32(&cs.b, &[o]))).unwrap();
    let g = ops::linear_backward(&t32(&dy, &[n, o]), &x, &w).unwrap();
    vec![y, g.dx, g.dw, g.db]
}

/// Same bits with 1 and with 3 rayon threads (each run in its own process,
/// since a process's rayon pool is fixed once started).
#[test]
fn bits_do_not_depend_on_thread_count() {
    if std::env::var_os("DIFFUSE_BITS_CHILD").is_some() {
        println!("bits: {:016x}", bits_hash(&thread_check_outputs().iter().collect::<Vec<_>>()));
        return;
    }
    let name = "bits_do_not_depend_on_thread_count";
    assert_eq!(bits_in_child(name, 1), bits_in_child(name, 3));
}

#[test]
fn bad_arguments_are_errors() {
    let x = t32(&[0.5; 6], &[2, 3]);
    let w = t32(&[0.5; 12], &[4, 3]);
    let fwd = |x: &Tensor, w: &Tensor, b: Option<&Tensor>| ops::linear_forward(x, w, b).unwrap_err().to_string();
    assert!(fwd(&x, &t32(&[0.5; 8], &[4, 2]), None).contains("weight"));
    assert!(fwd(&t32(&[0.5; 6], &[1, 2, 3]), &w, None).contains("rank-2"));
    assert!(fwd(&x, &t32(&[0.5; 12], &[12]), None).contains("rank-2"));
    assert!(fwd(&x, &w, Some(&t32(&[0.5; 3], &[3]))).contains("bias"));
    assert!(fwd(&x, &w, Some(&t64(&[0.5; 4], &[4]))).contains("dtype"));
    assert!(fwd(&x, &t64(&[0.5; 12], &[4, 3]), None).contains("dtype"));
    let bwd = |dy: &Tensor| ops::linear_backward(dy, &x, &w).map(|_| ()).unwrap_err().to_string();
    assert!(bwd(&t32(&[0.5; 6], &[2, 3])).contains("dy"));
    assert!(bwd(&t32(&[0.5; 8], &[8])).contains("dy"));
    assert!(bwd(&t64(&[0.5; 8], &[2, 4])).contains("dtype"));
}

// ------------------------------------- every device against the CPU reference

/// Tolerance of a device's result against the CPU reference (relative, whole tensor).
const DEVICE_TOL: f64 = 1e-5;

fn linear_forward_and_backward(dut: &DeviceUnderTest) {
    // (N, In, Out): rows and features across the 64-wide tiles; the bias
    // gradient in 18 and 16 row splits at N 70 and 64
    let cases = [(1, 3, 7), (3, 13, 7), (3, 7, 13), (1, 67, 65), (70, 13, 3), (3, 128, 64), (64, 128, 300)];
    let dev = &dut.device;
    let mut r = Report::new("linear", dut);
    let mut rng = TensorRng::new(41);
    for (n, d_in, d_out) in cases {
        let case = format!("N{n} In{d_in} Out{d_out}");
        let (x, w, b) = (rng.tensor(&[n, d_in]), rng.tensor(&[d_out, d_in]), rng.tensor(&[d_out]));
        let (xg, wg, bg) = (on(&x, dev), on(&w, dev), on(&b, dev));
        let y = ops::linear_forward(&x, &w, Some(&b)).unwrap();
        r.check("linear_forward (bias)", &case, &ops::linear_forward(&xg, &wg, Some(&bg)).unwrap(), &y, DEVICE_TOL);
        let y0 = ops::linear_forward(&x, &w, None).unwrap();
        r.check("linear_forward (no bias)", &case, &ops::linear_forward(&xg, &wg, None).unwrap(), &y0, DEVICE_TOL);

        let dy = rng.tensor(&[n, d_out]);
        let g = ops::linear_backward(&dy, &x, &w).unwrap();
        let gg = ops::linear_backward(&on(&dy, dev), &xg, &wg).unwrap();
        r.check("linear_backward dx", &case, &gg.dx, &g.dx, DEVICE_TOL);
        r.check("linear_backward dw", &case, &gg.dw, &g.dw, DEVICE_TOL);
        r.check("linear_backward db", &case, &gg.db, &g.db, DEVICE_TOL);
    }
}

per_device!(
    linear_forward_and_backward,
    linear_forward_and_backward_cpu,
    linear_forward_and_backward_emu,
    linear_forward_and_backward_cuda
);

/// The backward (db split over the rows) gives the same bits in every
/// thread order of the emulator.
#[test]
fn backward_is_bit_identical_across_thread_orders() {
    use diffuse_tensor::gpu::emu::{emu_device_with_order, ThreadOrder};
    let orders = [
        ThreadOrder::Forward,
        ThreadOrder::Reverse,
        ThreadOrder::Shuffle(5),
        ThreadOrder::WarpAhead,
        ThreadOrder::WarpAheadReverse,
    ];
    let mut rng = TensorRng::new(43);
    let (n, d_in, d_out) = (70, 37, 300);
    let (x, w, dy) = (rng.tensor(&[n, d_in]), rng.tensor(&[d_out, d_in]), rng.tensor(&[n, d_out]));
    let run = |order: ThreadOrder| {
        let dev = emu_device_with_order(order).unwrap();
        let g = ops::linear_backward(&on(&dy, &dev), &on(&x, &dev), &on(&w, &dev)).unwrap();
        [g.dx, g.dw, g.db].map(|t| t.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>())
    };
    let first = run(orders[0]);
    for o in &orders[1..] {
        assert!(run(*o) == first, "thread order {o} changes the bits");
    }
}
