//! scale_per_sample and clamp: f64 oracles, finite differences, adjoint.

mod common;
use common::*;
use diffuse_tensor::{ops, Tensor};
use proptest::prelude::*;

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn scale_per_sample_matches_oracle(n in awkward(9), per in awkward(50), seed in any::<u64>()) {
        let mut rng = TestRng::new(seed);
        let (x, s) = (rng.vec(n * per), rng.vec(n));
        let y = ops::scale_per_sample(&t32(&x, &[n, per]), &t32(&s, &[n])).unwrap();
        let want: Vec<f64> = (0..n * per).map(|i| x[i] * s[i / per]).collect();
        assert_close("scale_per_sample", &v64(&y), &want, 1e-5);
    }

    #[test]
    fn scale_per_sample_is_its_own_adjoint_in_x(n in awkward(5), per in awkward(20), seed in any::<u64>()) {
        let mut rng = TestRng::new(seed);
        let (x, s, r) = (rng.vec(n * per), rng.vec(n), rng.vec(n * per));
        let jx = v64(&ops::scale_per_sample(&t64(&x, &[n, per]), &t64(&s, &[n])).unwrap());
        let jtr = v64(&ops::scale_per_sample(&t64(&r, &[n, per]), &t64(&s, &[n])).unwrap());
        let (a, b) = (dot(&jx, &r), dot(&x, &jtr));
        prop_assert!((a - b).abs() <= 1e-12 * (1.0 + a.abs()));
    }

    #[test]
    fn scale_per_sample_gradients_match_finite_differences(n in awkward(4), per in awkward(6), seed in any::<u64>()) {
        let mut rng = TestRng::new(seed);
        let (x, s, r) = (rng.vec(n * per), rng.vec(n), rng.vec(n * per));
        // L = <scale_per_sample(x, s), r>; dL/dx = scale_per_sample(r, s).
        let dx = v64(&ops::scale_per_sample(&t64(&r, &[n, per]), &t64(&s, &[n])).unwrap());
        let fd = fd_grad(&x, 1e-5, |x| dot(&v64(&ops::scale_per_sample(&t64(x, &[n, per]), &t64(&s, &[n])).unwrap()), &r));
        assert_close("scale_per_sample d/dx vs finite differences", &dx, &fd, 1e-6);
    }

    #[test]
    fn clamp_matches_oracle(n in awkward(200), seed in any::<u64>()) {
        let x = TestRng::new(seed).vec_in(n, -3.0, 3.0);
        let y = ops::clamp(&t32(&x, &[n]), -1.0, 1.0).unwrap();
        let want: Vec<f64> = x.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        assert_close("clamp", &v64(&y), &want, 1e-5);
    }
}

#[test]
fn bad_arguments_are_errors() {
    assert!(ops::scale_per_sample(&t32(&[1.0; 6], &[2, 3]), &t32(&[1.0; 3], &[3])).is_err());
    assert!(ops::clamp(&t32(&[1.0], &[1]), 1.0, -1.0).is_err());
    let nan = ops::clamp(&t32(&[f64::NAN], &[1]), -1.0, 1.0).unwrap();
    assert!(v64(&nan)[0].is_nan(), "clamp must not hide a NaN");
}

// ------------------------------------- every device against the CPU reference

/// Tolerance of a device's result against the CPU reference (relative, whole tensor).
const DEVICE_TOL: f64 = 1e-5;

fn sampling_ops(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    let mut r = Report::new("sampling", dut).exact_on(dut, &[Backend::Emu, Backend::Cuda]);
    let mut rng = TensorRng::new(91);
    for shape in [vec![1, 1, 3, 3], vec![3, 7, 5, 3], vec![3], vec![2, 4099]] {
        let case = format!("{shape:?}");
        let x = rng.tensor_in(&shape, -3.0, 3.0);
        let s = rng.tensor(&[shape[0]]);
        let xg = on(&x, dev);
        r.check(
            "scale_per_sample",
            &case,
            &ops::scale_per_sample(&xg, &on(&s, dev)).unwrap(),
            &ops::scale_per_sample(&x, &s).unwrap(),
            DEVICE_TOL,
        );
        r.check("clamp", &case, &ops::clamp(&xg, -1.0, 1.0).unwrap(), &ops::clamp(&x, -1.0, 1.0).unwrap(), DEVICE_TOL);
    }
    // NaN passes through clamp on both (check compares NaN positions)
    let x = Tensor::from_vec(vec![f32::NAN, -5.0, 0.25, 5.0, f32::NAN], [5]).unwrap();
    r.check(
        "clamp",
        "NaN",
        &ops::clamp(&on(&x, dev), -1.0, 1.0).unwrap(),
        &ops::clamp(&x, -1.0, 1.0).unwrap(),
        DEVICE_TOL,
    );
    // a rank-0 x has no samples: zeros on both
    let x0 = Tensor::from_vec(vec![2.5f32], Vec::<usize>::new()).unwrap();
    let s0 = Tensor::from_vec(Vec::<f32>::new(), [0]).unwrap();
    r.check(
        "scale_per_sample",
        "rank 0",
        &ops::scale_per_sample(&on(&x0, dev), &on(&s0, dev)).unwrap(),
        &ops::scale_per_sample(&x0, &s0).unwrap(),
        DEVICE_TOL,
    );
}

per_device!(sampling_ops, sampling_ops_cpu, sampling_ops_emu, sampling_ops_cuda);
