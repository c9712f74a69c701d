//! Group norm (with and without fused SiLU): f64 oracle, finite differences,
//! normalisation and adjoint properties, determinism, error cases.

mod common;
use common::*;
use diffuse_tensor::ops::{self, GroupNormOutput};
use diffuse_tensor::Tensor;
use proptest::prelude::*;

/// The U-Net's eps, used by the forward tests.
const EPS: f64 = 1e-6;
/// The derivative tests' eps: groups of two or three nearly equal values make
/// the U-Net eps so ill-conditioned that central differences lose digits.
const FD_EPS: f64 = 1e-3;

/// A group-norm problem: sizes and data (x [n, c, h, w] or [n, c] when `flat`).
#[derive(Clone, Debug)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    groups: usize,
    flat: bool,
    silu: bool,
    eps: f64,
    x: Vec<f64>,
    gamma: Vec<f64>,
    beta: Vec<f64>,
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn new(n: usize, groups: usize, cpg: usize, h: usize, w: usize, flat: bool, silu: bool, seed: u64) -> Case {
        let (h, w) = if flat { (1, 1) } else { (h, w) };
        let c = groups * cpg;
        let mut rng = TestRng::new(seed);
        // An offset mean checks that the variance does not cancel away.
        let x = rng.vec(n * c * h * w).into_iter().map(|v| 2.0 * v + 0.5).collect();
        let gamma = rng.vec_in(c, -1.5, 1.5);
        let beta = rng.vec(c);
        Case { n, c, h, w, groups, flat, silu, eps: EPS, x, gamma, beta }
    }

    fn hw(&self) -> usize {
        self.h * self.w
    }

    fn shape(&self) -> Vec<usize> {
        if self.flat {
            vec![self.n, self.c]
        } else {
            vec![self.n, self.c, self.h, self.w]
        }
    }

    /// The same case with its data rounded to f32, so an f64 oracle sees
    /// exactly what the f32 op sees.
    fn rounded(&self) -> Case {
        let r = |v: &Vec<f64>| v.iter().map(|&x| x as f32 as f64).collect();
        Case { x: r(&self.x), gamma: r(&self.gamma), beta: r(&self.beta), ..self.clone() }
    }

    fn run(&self, t: fn(&[f64], &[usize]) -> Tensor) -> GroupNormOutput {
        self.run_with(t, &self.x, &self.gamma, &self.beta)
    }

    fn run_with(&self, t: fn(&[f64], &[usize]) -> Tensor, x: &[f64], g: &[f64], b: &[f64]) -> GroupNormOutput {
        ops::group_norm_forward(
            &t(x, &self.shape()),
            &t(g, &[self.c]),
            &t(b, &[self.c]),
            self.groups,
            self.eps,
            self.silu,
        )
        .unwrap()
    }
}

/// Naive f64 group norm: (y, mean [n*g], rstd [n*g]).
fn oracle(cs: &Case) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (hw, cpg) = (cs.hw(), cs.c / cs.groups);
    let idx = |n: usize, c: usize, p: usize| (n * cs.c + c) * hw + p;
    let mut y = vec![0.0; cs.x.len()];
    let (mut means, mut rstds) = (vec![], vec![]);
    for n in 0..cs.n {
        for g in 0..cs.groups {
            let chans = g * cpg..(g + 1) * cpg;
            let count = (cpg * hw) as f64;
            let mut sum = 0.0;
            for c in chans.clone() {
                for p in 0..hw {
                    sum += cs.x[idx(n, c, p)];
                }
            }
            let mean = sum / count;
            let mut sq = 0.0;
            for c in chans.clone() {
                for p in 0..hw {
                    sq += (cs.x[idx(n, c, p)] - mean).powi(2);
                }
            }
            let rstd = 1.0 / (sq / count + cs.eps).sqrt();
            for c in chans {
                for p in 0..hw {
                    let z = (cs.x[idx(n, c, p)] - mean) * rstd * cs.gamma[c] + cs.beta[c];
                    y[idx(n, c, p)] = if cs.silu { z / (1.0 + (-z).exp()) } else { z };
                }
            }
            means.push(mean);
            rstds.push(rstd);
        }
    }
    (y, means, rstds)
}

fn case_strategy(max_n: usize, max_hw: usize) -> impl Strategy<Value = Case> {
    (
        1..=max_n,
        prop_oneof![Just(1usize), Just(2), Just(3), Just(7), Just(13)],
        prop_oneof![Just(1usize), Just(2), Just(3), Just(4)],
        awkward(max_hw),
        awkward(max_hw),
        prop::bool::weighted(0.2),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(n, g, cpg, h, w, flat, silu, seed)| Case::new(n, g, cpg, h, w, flat, silu, seed))
}

/// <y(x, gamma, beta), r> in f64.
fn loss(cs: &Case, x: &[f64], g: &[f64], b: &[f64], r: &[f64]) -> f64 {
    dot(&v64(&cs.run_with(t64, x, g, b).y), r)
}

fn backward64(cs: &Case, dy: &[f64]) -> ops::GroupNormGrads {
    let fwd = cs.run(t64);
    ops::group_norm_backward(
        &t64(dy, &cs.shape()),
        &t64(&cs.x, &cs.shape()),
        &t64(&cs.gamma, &[cs.c]),
        &t64(&cs.beta, &[cs.c]),
        &fwd.mean,
        &fwd.rstd,
        cs.groups,
        cs.silu,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(proptest_config(64))]

    #[test]
    fn forward_f32_matches_f64_oracle(cs in case_strategy(3, 9)) {
        let cs = cs.rounded();
        let out = cs.run(t32);
        let (y, mean, rstd) = oracle(&cs);
        assert_close("group norm y", &v64(&out.y), &y, 1e-5);
        assert_close("group norm mean", &v64(&out.mean), &mean, 1e-5);
        assert_close("group norm rstd", &v64(&out.rstd), &rstd, 1e-5);
        prop_assert_eq!(out.mean.dims(), &[cs.n, cs.groups]);
    }

    #[test]
    fn forward_f64_matches_f64_oracle(cs in case_strategy(2, 7)) {
        let out = cs.run(t64);
        let (y, mean, rstd) = oracle(&cs);
        assert_close("group norm y (f64)", &v64(&out.y), &y, 1e-12);
        assert_close("group norm mean (f64)", &v64(&out.mean), &mean, 1e-12);
        assert_close("group norm rstd (f64)", &v64(&out.rstd), &rstd, 1e-12);
    }

    #[test]
    fn backward_matches_finite_differences(cs in case_strategy(2, 3)) {
        let cs = Case { eps: FD_EPS, ..cs };
        let r = TestRng::new(cs.x.len() as u64).vec(cs.x.len());
        let grads = backward64(&cs, &r);
        // Five-point differences: with groups of two values the three-point
        // ones' O(h^2) error reached 2.6e-6 (explore mode, n=1, c=2, 1x1, one
        // group; kept in group_norm.proptest-regressions).
        let h = 1e-4;
        let fx = fd_grad5(&cs.x, h, |x| loss(&cs, x, &cs.gamma, &cs.beta, &r));
        let fg = fd_grad5(&cs.gamma, h, |g| loss(&cs, &cs.x, g, &cs.beta, &r));
        let fb = fd_grad5(&cs.beta, h, |b| loss(&cs, &cs.x, &cs.gamma, b, &r));
        assert_close("group norm dx vs finite differences", &v64(&grads.dx), &fx, 1e-6);
        assert_close("group norm dgamma vs finite differences", &v64(&grads.dgamma), &fg, 1e-6);
        assert_close("group norm dbeta vs finite differences", &v64(&grads.dbeta), &fb, 1e-6);
    }

    /// <J v, r> (by a central-difference JVP) equals <v, J^T r> (the backward)
    /// for a joint direction v over (x, gamma, beta).
    #[test]
    fn backward_is_adjoint_of_forward_linearisation(cs in case_strategy(3, 9)) {
        let cs = Case { eps: FD_EPS, ..cs };
        let mut rng = TestRng::new(!(cs.x.len() as u64));
        let r = rng.vec(cs.x.len());
        let (vx, vg, vb) = (rng.vec(cs.x.len()), rng.vec(cs.c), rng.vec(cs.c));
        let step = |a: &[f64], v: &[f64], s: f64| a.iter().zip(v).map(|(a, v)| a + s * v).collect::<Vec<_>>();
        let at = |s: f64| loss(&cs, &step(&cs.x, &vx, s), &step(&cs.gamma, &vg, s), &step(&cs.beta, &vb, s), &r);
        // Five-point central difference (error O(h^4)): with groups of two
        // values, the normalisation's third derivative is large enough that
        // the three-point one's O(h^2) error reached 1.5e-6 (explore mode,
        // n=2, c=26, 1x1, 13 groups; kept in group_norm.proptest-regressions).
        let h = 1e-4;
        let jvp = (8.0 * (at(h) - at(-h)) - (at(2.0 * h) - at(-2.0 * h))) / (12.0 * h);
        let g = backward64(&cs, &r);
        let vjp = dot(&vx, &v64(&g.dx)) + dot(&vg, &v64(&g.dgamma)) + dot(&vb, &v64(&g.dbeta));
        assert_close("<J v, r> vs <v, J^T r>", &[vjp], &[jvp], 1e-6);
    }

    /// Without affine or SiLU, every group of the output has mean 0 and
    /// variance var / (var + eps), i.e. 1 up to the eps effect.
    #[test]
    fn output_groups_have_zero_mean_unit_variance(cs in case_strategy(3, 9)) {
        let cs = Case { silu: false, gamma: vec![1.0; cs.c], beta: vec![0.0; cs.c], ..cs };
        let slab = cs.c / cs.groups * cs.hw();
        prop_assume!(slab >= 4);
        let out = cs.run(t32);
        let (y, rstd) = (v64(&out.y), v64(&out.rstd));
        for (s, grp) in y.chunks(slab).enumerate() {
            let m = grp.iter().sum::<f64>() / slab as f64;
            let var = grp.iter().map(|v| (v - m).powi(2)).sum::<f64>() / slab as f64;
            let expected_var = 1.0 - EPS * rstd[s] * rstd[s];
            prop_assert!(m.abs() < 1e-5, "group {s} mean {m}");
            prop_assert!((var - expected_var).abs() < 1e-5, "group {s} variance {var}, expected {expected_var}");
            prop_assert!((var - 1.0).abs() < 1e-3, "group {s} variance {var}");
        }
    }
}

/// The derivative checks at the U-Net's eps, on groups large enough to be
/// well conditioned.
#[test]
fn backward_at_unet_eps_matches_finite_differences() {
    for &silu in &[false, true] {
        let cs = Case::new(2, 2, 3, 3, 5, false, silu, 11);
        let r = TestRng::new(12).vec(cs.x.len());
        let grads = backward64(&cs, &r);
        let fx = fd_grad(&cs.x, 1e-5, |x| loss(&cs, x, &cs.gamma, &cs.beta, &r));
        let fg = fd_grad(&cs.gamma, 1e-5, |g| loss(&cs, &cs.x, g, &cs.beta, &r));
        assert_close("group norm dx at eps 1e-6", &v64(&grads.dx), &fx, 1e-6);
        assert_close("group norm dgamma at eps 1e-6", &v64(&grads.dgamma), &fg, 1e-6);
    }
}

#[test]
fn forward_and_backward_are_bit_identical_across_runs() {
    for &silu in &[false, true] {
        let cs = Case::new(6, 8, 8, 14, 13, false, silu, 7);
        let dy = TestRng::new(8).vec(cs.x.len());
        let run = || {
            let f = cs.run(t32);
            let g = ops::group_norm_backward(
                &t32(&dy, &cs.shape()),
                &t32(&cs.x, &cs.shape()),
                &t32(&cs.gamma, &[cs.c]),
                &t32(&cs.beta, &[cs.c]),
                &f.mean,
                &f.rstd,
                cs.groups,
                silu,
            )
            .unwrap();
            [f.y, f.mean, f.rstd, g.dx, g.dgamma, g.dbeta]
                .iter()
                .map(|t| t.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run(), "group norm (silu {silu}) is not deterministic");
    }
}

/// Every output of a forward and backward big enough to split across threads.
fn thread_check_outputs() -> Vec<Tensor> {
    let cs = Case::new(6, 8, 8, 14, 13, false, true, 21);
    let dy = TestRng::new(22).vec(cs.x.len());
    let (x, g, b) = (t32(&cs.x, &cs.shape()), t32(&cs.gamma, &[cs.c]), t32(&cs.beta, &[cs.c]));
    let f = ops::group_norm_forward(&x, &g, &b, cs.groups, EPS, true).unwrap();
    let d = ops::group_norm_backward(&t32(&dy, &cs.shape()), &x, &g, &b, &f.mean, &f.rstd, cs.groups, true).unwrap();
    vec![f.y, f.mean, f.rstd, d.dx, d.dgamma, d.dbeta]
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
    let x = t32(&[0.5; 2 * 6 * 3], &[2, 6, 3, 1]);
    let (g6, b6) = (t32(&[1.0; 6], &[6]), t32(&[0.0; 6], &[6]));
    let fwd = |x: &Tensor, g: &Tensor, b: &Tensor, groups: usize, eps: f64| {
        ops::group_norm_forward(x, g, b, groups, eps, false).map(|_| ()).unwrap_err().to_string()
    };
    assert!(fwd(&x, &g6, &b6, 4, EPS).contains("divide"));
    assert!(fwd(&x, &g6, &b6, 0, EPS).contains("divide"));
    assert!(fwd(&x, &t32(&[1.0; 5], &[5]), &b6, 3, EPS).contains("gamma"));
    assert!(fwd(&x, &g6, &t32(&[1.0; 3], &[3]), 3, EPS).contains("beta"));
    assert!(fwd(&t32(&[0.5; 36], &[2, 6, 3]), &g6, &b6, 3, EPS).contains("shape"));
    assert!(fwd(&t32(&[], &[2, 6, 0, 1]), &g6, &b6, 3, EPS).contains("empty"));
    assert!(fwd(&x, &g6, &b6, 3, -1.0).contains("eps"));
    assert!(fwd(&x, &g6, &b6, 3, f64::NAN).contains("eps"));
    assert!(fwd(&x, &t64(&[1.0; 6], &[6]), &b6, 3, EPS).contains("dtype"));

    let f = ops::group_norm_forward(&x, &g6, &b6, 3, EPS, true).unwrap();
    let bwd = |dy: &Tensor, mean: &Tensor, rstd: &Tensor, groups: usize| {
        ops::group_norm_backward(dy, &x, &g6, &b6, mean, rstd, groups, true).map(|_| ()).unwrap_err().to_string()
    };
    assert!(bwd(&t32(&[0.5; 36], &[2, 6, 3]), &f.mean, &f.rstd, 3).contains("dy"));
    assert!(bwd(&x, &t32(&[0.0; 6], &[6]), &f.rstd, 3).contains("mean"));
    assert!(bwd(&x, &f.mean, &t32(&[0.0; 6], &[3, 2]), 3).contains("rstd"));
    assert!(bwd(&x, &f.mean, &f.rstd, 2).contains("mean"));
    assert!(bwd(&x, &f.mean, &f.rstd, 5).contains("divide"));
}

// ------------------------------------- every device against the CPU reference

/// Tolerance of a device's result against the CPU reference (relative, whole tensor).
const DEVICE_TOL: f64 = 1e-5;

fn group_norm_forward_and_backward(dut: &DeviceUnderTest) {
    // (shape, groups): channels 3/7/13/12/32, odd H*W, an [N, C] input, and
    // slabs longer than a 256-thread block; batches of 37 and 64 images split
    // dgamma, dbeta into 10 and 16 partial sums
    let cases: &[(&[usize], usize)] = &[
        (&[37, 32, 3, 3], 8),
        (&[64, 12], 4),
        (&[1, 3, 5, 3], 1),
        (&[3, 7, 3, 5], 7),
        (&[3, 13, 3, 3], 1),
        (&[1, 12, 7, 5], 4),
        (&[3, 32, 7, 7], 8),
        (&[2, 8, 17, 19], 2),
        (&[2, 32, 28, 28], 8),
        (&[3, 12], 4),
        (&[1, 7], 1),
    ];
    let dev = &dut.device;
    let mut r = Report::new("group_norm", dut);
    let mut rng = TensorRng::new(21);
    for &(shape, groups) in cases {
        for fuse in [false, true] {
            let case = format!("{shape:?} G{groups} silu={fuse}");
            let c = shape[1];
            // a non-zero mean and scale, as activations have
            let x = rng.tensor_in(shape, -1.5, 2.5);
            let gamma = rng.tensor_in(&[c], 0.5, 1.5);
            let beta = rng.tensor_in(&[c], -0.5, 0.5);
            let (xg, gg, bg) = (on(&x, dev), on(&gamma, dev), on(&beta, dev));
            let f = ops::group_norm_forward(&x, &gamma, &beta, groups, 1e-6, fuse).unwrap();
            let fg = ops::group_norm_forward(&xg, &gg, &bg, groups, 1e-6, fuse).unwrap();
            r.check("group_norm_forward y", &case, &fg.y, &f.y, DEVICE_TOL);
            r.check("group_norm_forward mean", &case, &fg.mean, &f.mean, DEVICE_TOL);
            r.check("group_norm_forward rstd", &case, &fg.rstd, &f.rstd, DEVICE_TOL);

            let dy = rng.tensor(shape);
            let dyg = on(&dy, dev);
            let b = ops::group_norm_backward(&dy, &x, &gamma, &beta, &f.mean, &f.rstd, groups, fuse).unwrap();
            let bg2 = ops::group_norm_backward(&dyg, &xg, &gg, &bg, &fg.mean, &fg.rstd, groups, fuse).unwrap();
            r.check("group_norm_backward dx", &case, &bg2.dx, &b.dx, DEVICE_TOL);
            r.check("group_norm_backward dgamma", &case, &bg2.dgamma, &b.dgamma, DEVICE_TOL);
            r.check("group_norm_backward dbeta", &case, &bg2.dbeta, &b.dbeta, DEVICE_TOL);
        }
    }
}

per_device!(
    group_norm_forward_and_backward,
    group_norm_forward_and_backward_cpu,
    group_norm_forward_and_backward_emu,
    group_norm_forward_and_backward_cuda
);

fn f64_of(t: &Tensor) -> Tensor {
    t.to_dtype(diffuse_tensor::DType::F64).unwrap()
}

/// `group_norm_apply` rebuilds the forward's output from the saved
/// statistics bit for bit (what the U-Net's residual blocks rely on to drop
/// their first norm's output on the CPU), in f32 and f64, with and without
/// SiLU, on awkward shapes with a large mean; and refuses bad statistics and
/// GPU tensors with an error.
#[test]
fn apply_rebuilds_the_forward_output_bit_for_bit() {
    let mut rng = TensorRng::new(22);
    let cases: &[(&[usize], usize)] = &[(&[3, 12, 7, 5], 4), (&[2, 32, 28, 28], 8), (&[5, 7], 7), (&[1, 13, 3, 3], 1)];
    for &(shape, groups) in cases {
        for fuse in [false, true] {
            let c = shape[1];
            let x = rng.tensor_in(shape, 40.0, 44.0);
            let gamma = rng.tensor_in(&[c], 0.5, 1.5);
            let beta = rng.tensor_in(&[c], -0.5, 0.5);
            for (x, gamma, beta) in
                [(x.clone(), gamma.clone(), beta.clone()), (f64_of(&x), f64_of(&gamma), f64_of(&beta))]
            {
                let f = ops::group_norm_forward(&x, &gamma, &beta, groups, 1e-6, fuse).unwrap();
                let y = ops::group_norm_apply(&x, &gamma, &beta, &f.mean, &f.rstd, groups, fuse).unwrap();
                let bits = |t: &Tensor| v64(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y), bits(&f.y), "{shape:?} G{groups} silu={fuse} {:?}", x.dtype());
                let wrong = Tensor::zeros(vec![shape[0], groups + 1], x.dtype(), &x.device()).unwrap();
                let e = ops::group_norm_apply(&x, &gamma, &beta, &wrong, &f.rstd, groups, fuse).unwrap_err();
                assert!(e.to_string().contains(&format!("[{}, {groups}]", shape[0])), "{e}");
            }
        }
    }
}

/// On the CPU apply runs; on a GPU it is an error naming why (GPU layers keep
/// the forward's output).
fn apply_is_cpu_only(dut: &DeviceUnderTest) {
    let mut rng = TensorRng::new(23);
    let dev = &dut.device;
    let x = on(&rng.tensor(&[2, 4, 3, 3]), dev);
    let (g, b) = (on(&rng.tensor(&[4]), dev), on(&rng.tensor(&[4]), dev));
    let f = ops::group_norm_forward(&x, &g, &b, 2, 1e-6, true).unwrap();
    let y = ops::group_norm_apply(&x, &g, &b, &f.mean, &f.rstd, 2, true);
    if dev.is_cpu() {
        assert_eq!(v64(&y.unwrap()), v64(&f.y));
    } else {
        let e = y.unwrap_err().to_string();
        assert!(e.contains("CPU only"), "{} : {e}", dut.label);
    }
}

per_device!(apply_is_cpu_only, apply_is_cpu_only_cpu, apply_is_cpu_only_emu, apply_is_cpu_only_cuda);

/// dgamma, dbeta (split over the images) and dx give the same bits in every
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
    let mut rng = TensorRng::new(23);
    let shape = [37, 32, 5, 5];
    let x = rng.tensor_in(&shape, -1.5, 2.5);
    let gamma = rng.tensor_in(&[32], 0.5, 1.5);
    let beta = rng.tensor_in(&[32], -0.5, 0.5);
    let dy = rng.tensor(&shape);
    let run = |order: ThreadOrder| {
        let dev = emu_device_with_order(order).unwrap();
        let (xg, gg, bg, dyg) = (on(&x, &dev), on(&gamma, &dev), on(&beta, &dev), on(&dy, &dev));
        let f = ops::group_norm_forward(&xg, &gg, &bg, 8, 1e-6, true).unwrap();
        let b = ops::group_norm_backward(&dyg, &xg, &gg, &bg, &f.mean, &f.rstd, 8, true).unwrap();
        [b.dx, b.dgamma, b.dbeta].map(|t| t.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>())
    };
    let first = run(orders[0]);
    for o in &orders[1..] {
        assert!(run(*o) == first, "thread order {o} changes the bits");
    }
}

/// Group norm with the dropout fused into its pass gives exactly what the
/// two ops give one after the other: the forward (statistics too) and the
/// backward's rebuild with its kept mask, in f32 and f64, with and without
/// SiLU, on slabs and planes that are not multiples of a Philox block
/// (8 elements) or a keep word (64), across the 16,384-element task
/// boundary, and at mask offsets on and off a keep word (the rebuild's
/// unfused fallback); bit-identical on one thread.
#[test]
fn dropout_fused_into_group_norm_matches_the_two_ops() {
    use diffuse_tensor::ops::DropoutAt;
    let mut rng = TensorRng::new(31);
    let bits = |t: &Tensor| v64(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let cases: &[(&[usize], usize)] = &[(&[3, 6, 7, 5], 3), (&[2, 8, 40, 41], 4), (&[5, 7], 7), (&[2, 12, 3, 3], 6)];
    for (k, &(shape, groups)) in cases.iter().enumerate() {
        for (fuse, offset, p) in [(true, 0u64, 0.1f32), (false, 5, 0.3), (true, 192, 0.5), (true, 37 * 64 + 9, 0.1)] {
            let c = shape[1];
            let x = rng.tensor_in(shape, -3.0, 5.0);
            let gamma = rng.tensor_in(&[c], 0.5, 1.5);
            let beta = rng.tensor_in(&[c], -0.5, 0.5);
            let dy = rng.tensor(shape);
            let dr = DropoutAt { p, seed: 77 + k as u64, step: 3.into(), stream: 5, offset };
            for (x, gamma, beta, dy) in [
                (x.clone(), gamma.clone(), beta.clone(), dy.clone()),
                (f64_of(&x), f64_of(&gamma), f64_of(&beta), f64_of(&dy)),
            ] {
                let what = format!("{shape:?} G{groups} silu={fuse} offset {offset} {:?}", x.dtype());
                let plain = ops::group_norm_forward(&x, &gamma, &beta, groups, EPS, fuse).unwrap();
                let want = dr.forward(&plain.y).unwrap();
                let fused = || ops::group_norm_forward_dropout(&x, &gamma, &beta, groups, EPS, fuse, &dr).unwrap();
                let rebuild = || {
                    let (m, r) = (&plain.mean, &plain.rstd);
                    ops::group_norm_apply_dropout_keeping_mask(&x, &gamma, &beta, m, r, groups, fuse, &dr).unwrap()
                };
                let f = fused();
                assert_eq!(bits(&f.y), bits(&want), "forward, {what}");
                assert_eq!(bits(&f.mean), bits(&plain.mean), "{what}");
                assert_eq!(bits(&f.rstd), bits(&plain.rstd), "{what}");
                let (rebuilt, mask) = rebuild();
                assert_eq!(bits(&rebuilt), bits(&want), "rebuild, {what}");
                let masked = ops::dropout_backward_with_mask(&dy, &mask).unwrap();
                let drawn = ops::dropout_backward_at(&dy, p, dr.seed, dr.step, dr.stream, offset).unwrap();
                assert_eq!(bits(&masked), bits(&drawn), "kept mask, {what}");
                let one = one_thread(|| (bits(&fused().y), bits(&rebuild().0)));
                assert_eq!(one, (bits(&want), bits(&want)), "one thread, {what}");
            }
        }
    }
    let x = rng.tensor(&[2, 4, 3, 3]);
    let (g, b) = (rng.tensor(&[4]), rng.tensor(&[4]));
    let bad = DropoutAt { p: 1.0, seed: 0, step: 0.into(), stream: 0, offset: 0 };
    let e = ops::group_norm_forward_dropout(&x, &g, &b, 2, EPS, true, &bad).unwrap_err().to_string();
    assert!(e.contains("dropout probability must be in [0, 1)"), "{e}");
}

/// The backward with a dropout's backward before it and a residual gradient
/// after it in its pass gives the separate ops' bits: slabs whose starts
/// fall anywhere in a keep word, f32 and f64, with and without SiLU, on one
/// thread as on two; a mask or residual of the wrong size is an error.
#[test]
fn backward_fused_with_dropout_and_residual_matches_the_separate_ops() {
    use diffuse_tensor::ops::{DropoutAt, GroupNormBackwardFusion};
    let mut rng = TensorRng::new(47);
    let bits = |t: &Tensor| v64(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let cases: &[(&[usize], usize)] = &[(&[3, 6, 7, 5], 3), (&[2, 8, 40, 41], 4), (&[5, 7], 7), (&[2, 12, 3, 3], 6)];
    for (k, &(shape, groups)) in cases.iter().enumerate() {
        for (fuse, offset, p) in [(true, 0u64, 0.1f32), (false, 5, 0.3), (true, 37 * 64 + 9, 0.5)] {
            let c = shape[1];
            let x = rng.tensor_in(shape, -3.0, 5.0);
            let gamma = rng.tensor_in(&[c], 0.5, 1.5);
            let beta = rng.tensor_in(&[c], -0.5, 0.5);
            let dy = rng.tensor(shape);
            let residual = rng.tensor(shape);
            let dr = DropoutAt { p, seed: 91 + k as u64, step: 2.into(), stream: 3, offset };
            for (x, gamma, beta, dy, residual) in [
                (x.clone(), gamma.clone(), beta.clone(), dy.clone(), residual.clone()),
                (f64_of(&x), f64_of(&gamma), f64_of(&beta), f64_of(&dy), f64_of(&residual)),
            ] {
                let what = format!("{shape:?} G{groups} silu={fuse} offset {offset} {:?}", x.dtype());
                let f = ops::group_norm_forward(&x, &gamma, &beta, groups, EPS, fuse).unwrap();
                let (_, mask) = dr.forward_keeping_mask(&f.y).unwrap();
                let mask = mask.expect("a CPU tensor keeps its mask");
                let separate = {
                    let masked = ops::dropout_backward_with_mask(&dy, &mask).unwrap();
                    let mut g =
                        ops::group_norm_backward(&masked, &x, &gamma, &beta, &f.mean, &f.rstd, groups, fuse).unwrap();
                    ops::add_in_place(&mut g.dx, &residual).unwrap();
                    [bits(&g.dx), bits(&g.dgamma), bits(&g.dbeta)]
                };
                let fused = |dy_mask, residual| {
                    let fusion = GroupNormBackwardFusion { dy_mask, residual };
                    let g =
                        ops::group_norm_backward_fused(&dy, &x, &gamma, &beta, &f.mean, &f.rstd, groups, fuse, fusion)
                            .unwrap();
                    [bits(&g.dx), bits(&g.dgamma), bits(&g.dbeta)]
                };
                assert_eq!(fused(Some(&mask), Some(&residual)), separate, "{what}");
                assert_eq!(one_thread(|| fused(Some(&mask), Some(&residual))), separate, "one thread, {what}");
                // each part alone
                let masked = ops::dropout_backward_with_mask(&dy, &mask).unwrap();
                let g = ops::group_norm_backward(&masked, &x, &gamma, &beta, &f.mean, &f.rstd, groups, fuse).unwrap();
                assert_eq!(fused(Some(&mask), None), [bits(&g.dx), bits(&g.dgamma), bits(&g.dbeta)], "{what}");
                let mut g = ops::group_norm_backward(&dy, &x, &gamma, &beta, &f.mean, &f.rstd, groups, fuse).unwrap();
                ops::add_in_place(&mut g.dx, &residual).unwrap();
                assert_eq!(fused(None, Some(&residual)), [bits(&g.dx), bits(&g.dgamma), bits(&g.dbeta)], "{what}");
            }
        }
    }
    let x = rng.tensor(&[2, 4, 3, 3]);
    let (g, b, dy) = (rng.tensor(&[4]), rng.tensor(&[4]), rng.tensor(&[2, 4, 3, 3]));
    let f = ops::group_norm_forward(&x, &g, &b, 2, EPS, true).unwrap();
    let dr = DropoutAt { p: 0.2, seed: 1, step: 0.into(), stream: 0, offset: 0 };
    let (_, short) = dr.forward_keeping_mask(&rng.tensor(&[2, 4, 3, 2])).unwrap();
    let fusion = GroupNormBackwardFusion { dy_mask: short.as_ref(), residual: None };
    let e = ops::group_norm_backward_fused(&dy, &x, &g, &b, &f.mean, &f.rstd, 2, true, fusion).unwrap_err().to_string();
    assert!(e.contains("a dropout mask of 48 elements for dy of 72"), "{e}");
    let wrong = rng.tensor(&[2, 4, 9]);
    let fusion = GroupNormBackwardFusion { dy_mask: None, residual: Some(&wrong) };
    let e = ops::group_norm_backward_fused(&dy, &x, &g, &b, &f.mean, &f.rstd, 2, true, fusion).unwrap_err().to_string();
    assert!(e.contains("a residual gradient shaped like x"), "{e}");
}
