//! SiLU: f64 oracle, finite differences, adjoint property.

mod common;
use common::*;
use diffuse_tensor::ops;
use proptest::prelude::*;

fn oracle_silu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v / (1.0 + (-v).exp())).collect()
}

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn silu_forward_matches_f64_oracle(n in awkward(300), seed in any::<u64>()) {
        let x = TestRng::new(seed).vec_in(n, -6.0, 6.0);
        let y = ops::silu_forward(&t32(&x, &[n])).unwrap();
        assert_close("silu forward", &v64(&y), &oracle_silu(&x), 1e-5);
    }

    #[test]
    fn silu_backward_matches_finite_differences(n in awkward(40), seed in any::<u64>()) {
        let mut rng = TestRng::new(seed);
        let x = rng.vec_in(n, -4.0, 4.0);
        let r = rng.vec(n);
        let dx = ops::silu_backward(&t64(&r, &[n]), &t64(&x, &[n])).unwrap();
        let fd = fd_grad(&x, 1e-5, |x| dot(&v64(&ops::silu_forward(&t64(x, &[n])).unwrap()), &r));
        assert_close("silu backward vs finite differences", &v64(&dx), &fd, 1e-6);
    }
}

#[test]
fn silu_rejects_mismatched_shapes() {
    let e = ops::silu_backward(&t32(&[1.0, 2.0], &[2]), &t32(&[1.0, 2.0, 3.0], &[3])).unwrap_err();
    assert!(e.to_string().contains("shape mismatch"), "{e}");
}

// ------------------------------------- every device against the CPU reference

/// Tolerance of a device's result against the CPU reference (relative, whole tensor).
const DEVICE_TOL: f64 = 1e-5;

/// Lengths: tiny, odd, and one past the 8192-block grid cap (2,097,152
/// threads), so the grid-stride loops wrap.
const DEVICE_LENGTHS: [usize; 4] = [1, 7, 1003, 8192 * 256 + 13];

fn silu_forward_and_backward(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    let mut r = Report::new("activation", dut).exact_on(dut, &[Backend::Emu]);
    let mut rng = TensorRng::new(61);
    for len in DEVICE_LENGTHS {
        let case = format!("len {len}");
        let x = rng.tensor_in(&[len], -8.0, 8.0);
        let dy = rng.tensor(&[len]);
        let (xg, dyg) = (on(&x, dev), on(&dy, dev));
        r.check("silu_forward", &case, &ops::silu_forward(&xg).unwrap(), &ops::silu_forward(&x).unwrap(), DEVICE_TOL);
        r.check(
            "silu_backward",
            &case,
            &ops::silu_backward(&dyg, &xg).unwrap(),
            &ops::silu_backward(&dy, &x).unwrap(),
            DEVICE_TOL,
        );
    }
}

per_device!(
    silu_forward_and_backward,
    silu_forward_and_backward_cpu,
    silu_forward_and_backward_emu,
    silu_forward_and_backward_cuda
);
