//! SiLU: f64 oracle, finite differences, adjoint property.

mod common;
use common::*;
use diffuse_tensor::ops;
use proptest::prelude::*;

fn oracle_silu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v / (1.0 + (-v).exp())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

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
