//! noise_add, the MSE loss and dropout: oracles that recompute the Philox
//! draws element by element (the spec), finite differences, adjoints,
//! statistics, purity, determinism and error cases.

mod common;
use common::*;
use diffuse_tensor::{ops, philox, Tensor};
use proptest::prelude::*;

fn round32(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| x as f32 as f64).collect()
}

fn one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(f)
}

// ---- oracles ----

/// (x_t, eps) with eps[i] = philox::normal(seed, step, stream, i), one draw per element.
fn oracle_noise(x0: &[f64], a: &[f64], b: &[f64], seed: u64, step: u32, stream: u32) -> (Vec<f64>, Vec<f64>) {
    let per = x0.len() / a.len();
    let mut xt = vec![0.0; x0.len()];
    let mut eps = vec![0.0; x0.len()];
    for i in 0..x0.len() {
        eps[i] = philox::normal(seed, step, stream, i as u64) as f64;
        xt[i] = a[i / per] * x0[i] + b[i / per] * eps[i];
    }
    (xt, eps)
}

fn oracle_mse(p: &[f64], t: &[f64]) -> f64 {
    let mut s = 0.0;
    for i in 0..p.len() {
        s += (p[i] - t[i]) * (p[i] - t[i]);
    }
    s / p.len() as f64
}

fn oracle_dropout(x: &[f64], p: f32, seed: u64, step: u32, stream: u32) -> Vec<f64> {
    let threshold = philox::dropout_threshold(p);
    let mut y = vec![0.0; x.len()];
    for i in 0..x.len() {
        if philox::keep(philox::bits(seed, step, stream, i as u64), threshold) {
            y[i] = x[i] / (1.0 - p as f64);
        }
    }
    y
}

fn batch() -> impl Strategy<Value = Vec<usize>> {
    (awkward(4), awkward(3), awkward(9), awkward(9)).prop_map(|(n, c, h, w)| vec![n, c, h, w])
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn noise_add_matches_per_element_philox_oracle(
        shape in batch(), seed in any::<u64>(), step in any::<u32>(), stream in any::<u32>()
    ) {
        let mut rng = TestRng::new(seed);
        let n = shape[0];
        let x0 = round32(rng.vec(numel(&shape)));
        let a = round32(rng.vec_in(n, 0.0, 1.0));
        let b: Vec<f64> = a.iter().map(|a| ((1.0 - a * a).sqrt() as f32) as f64).collect();
        let (xt_want, eps_want) = oracle_noise(&x0, &a, &b, seed, step, stream);
        let out = ops::noise_add(&t32(&x0, &shape), &t32(&a, &[n]), &t32(&b, &[n]), seed, step, stream).unwrap();
        prop_assert_eq!(out.x_t.dims(), &shape[..]);
        prop_assert_eq!(v64(&out.eps), eps_want.clone(), "f32 eps must be the Philox f32 bits exactly");
        assert_close("noise_add x_t", &v64(&out.x_t), &xt_want, 1e-5);
        // f64 tensors: eps drawn in f32 then widened, so the same values
        let out64 = ops::noise_add(&t64(&x0, &shape), &t64(&a, &[n]), &t64(&b, &[n]), seed, step, stream).unwrap();
        prop_assert_eq!(v64(&out64.eps), eps_want);
        assert_close("noise_add x_t f64", &v64(&out64.x_t), &xt_want, 1e-14);
    }

    #[test]
    fn noise_add_backward_matches_finite_differences(shape in batch(), seed in any::<u64>()) {
        let mut rng = TestRng::new(seed);
        let n = shape[0];
        let x0 = rng.vec(numel(&shape));
        let (a, b) = (rng.vec_in(n, 0.0, 1.0), rng.vec_in(n, 0.0, 1.0));
        let r = rng.vec(x0.len());
        let (ta, tb) = (t64(&a, &[n]), t64(&b, &[n]));
        let f = |x0: &[f64]| dot(&v64(&ops::noise_add(&t64(x0, &shape), &ta, &tb, 7, 3, 1).unwrap().x_t), &r);
        let dx0 = ops::noise_add_backward(&t64(&r, &shape), &ta).unwrap();
        assert_close("noise_add backward", &v64(&dx0), &fd_grad(&x0, 1e-5, f), 1e-6);
    }

    #[test]
    fn mse_matches_oracle_and_finite_differences(shape in batch(), seed in any::<u64>(), dloss in -2.0f64..2.0) {
        let mut rng = TestRng::new(seed);
        let m = numel(&shape);
        let (p, t) = (round32(rng.vec(m)), round32(rng.vec(m)));
        let loss = ops::mse_loss_forward(&t32(&p, &shape), &t32(&t, &shape)).unwrap();
        prop_assert_eq!(loss.dims(), &[1]);
        assert_close("mse forward", &[loss.scalar_f64().unwrap()], &[oracle_mse(&p, &t)], 1e-5);

        let grad = ops::mse_loss_backward(&t64(&p, &shape), &t64(&t, &shape), dloss).unwrap();
        let f = |p: &[f64]| dloss * ops::mse_loss_forward(&t64(p, &shape), &t64(&t, &shape)).unwrap().scalar_f64().unwrap();
        assert_close("mse backward", &v64(&grad), &fd_grad(&p, 1e-5, f), 1e-6);
    }

    #[test]
    fn dropout_matches_oracle_fd_and_adjoint(
        shape in batch(), p in 0.0f32..0.95, seed in any::<u64>(), step in any::<u32>(), stream in any::<u32>()
    ) {
        let mut rng = TestRng::new(seed);
        let m = numel(&shape);
        let x = round32(rng.vec(m));
        let y = ops::dropout_forward(&t32(&x, &shape), p, seed, step, stream).unwrap();
        prop_assert_eq!(y.dims(), &shape[..]);
        let want = oracle_dropout(&x, p, seed, step, stream);
        if want.iter().any(|&v| v != 0.0) {
            assert_close("dropout forward", &v64(&y), &want, 1e-5);
        } else {
            prop_assert!(v64(&y).iter().all(|&v| v == 0.0));
        }

        // the mask is fixed by (seed, step, stream): backward vs fd, and adjoint
        let r = rng.vec(m);
        let dx = v64(&ops::dropout_backward(&t64(&r, &shape), p, seed, step, stream).unwrap());
        let fwd = |x: &[f64]| v64(&ops::dropout_forward(&t64(x, &shape), p, seed, step, stream).unwrap());
        let fd = fd_grad(&x, 1e-5, |x| dot(&fwd(x), &r));
        let all_dropped = fd.iter().all(|&g| g == 0.0) && dx.iter().all(|&g| g == 0.0);
        prop_assert!(all_dropped || rel_err(&dx, &fd) < 1e-6, "dropout backward vs fd: {:.3e}", rel_err(&dx, &fd));
        let (lhs, rhs) = (dot(&fwd(&x), &r), dot(&x, &dx));
        prop_assert!((lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()));
    }
}

#[test]
fn noise_has_unit_moments_for_large_n() {
    let n = 1 << 18;
    let shape = [4, n / 4];
    let out =
        ops::noise_add(&t32(&vec![0.0; n], &shape), &t32(&[0.0; 4], &[4]), &t32(&[1.0; 4], &[4]), 123, 9, 2).unwrap();
    let eps = v64(&out.eps);
    assert_eq!(v64(&out.x_t), eps, "a = 0, b = 1 gives x_t = eps");
    let mean = eps.iter().sum::<f64>() / n as f64;
    let var = eps.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n as f64;
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((var - 1.0).abs() < 0.01, "var {var}");
}

#[test]
fn noise_is_pure_in_seed_step_and_stream() {
    let shape = [3, 1, 11, 13];
    let x0 = t32(&TestRng::new(1).vec(3 * 11 * 13), &shape);
    let (a, b) = (t32(&[0.9, 0.5, 0.1], &[3]), t32(&[0.4, 0.8, 0.99], &[3]));
    let draw = |seed, step, stream| ops::noise_add(&x0, &a, &b, seed, step, stream).unwrap().eps.to_vec_f32().unwrap();
    let base = draw(5, 10, 0);
    assert_eq!(base, draw(5, 10, 0));
    assert_eq!(base, one_thread(|| draw(5, 10, 0)));
    assert_ne!(base, draw(5, 11, 0), "another step");
    assert_ne!(base, draw(5, 10, 1), "another stream");
    assert_ne!(base, draw(6, 10, 0), "another seed");
}

#[test]
fn large_results_are_bit_identical_across_runs_and_thread_counts() {
    // several reduction and Philox chunks, not a multiple of either
    let shape = [3, 1, 211, 197];
    let m = numel(&shape);
    let mut rng = TestRng::new(77);
    let (p, t) = (t32(&rng.vec(m), &shape), t32(&rng.vec(m), &shape));
    let (a, b) = (t32(&[0.3, 0.6, 0.9], &[3]), t32(&[0.9, 0.6, 0.3], &[3]));
    let run = || {
        let loss = ops::mse_loss_forward(&p, &t).unwrap().to_vec_f32().unwrap();
        let noised = ops::noise_add(&p, &a, &b, 1, 2, 3).unwrap().x_t.to_vec_f32().unwrap();
        let dropped = ops::dropout_forward(&p, 0.3, 1, 2, 3).unwrap().to_vec_f32().unwrap();
        (loss, noised, dropped)
    };
    assert_eq!(run(), run());
    assert_eq!(run(), one_thread(run));
    // and the big tensors (many Philox chunks) still match the per-element oracles
    let want = oracle_dropout(&v64(&p), 0.3, 1, 2, 3);
    assert_close("large dropout", &v64(&ops::dropout_forward(&p, 0.3, 1, 2, 3).unwrap()), &want, 1e-6);
    let (xt_want, eps_want) = oracle_noise(&v64(&p), &v64(&a), &v64(&b), 1, 2, 3);
    let out = ops::noise_add(&p, &a, &b, 1, 2, 3).unwrap();
    assert_eq!(v64(&out.eps), eps_want, "large eps");
    assert_close("large x_t", &v64(&out.x_t), &xt_want, 1e-6);
}

#[test]
fn dropout_edge_probabilities_and_rate() {
    let n = 100_000;
    let x = t32(&vec![1.0; n], &[n]);
    assert_eq!(v64(&ops::dropout_forward(&x, 0.0, 1, 0, 0).unwrap()), vec![1.0; n], "p = 0 is the identity");
    let y = v64(&ops::dropout_forward(&x, 0.25, 4, 0, 0).unwrap());
    let kept = y.iter().filter(|&&v| v != 0.0).count();
    assert!((kept as f64 / n as f64 - 0.75).abs() < 0.01, "kept {kept}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6), "kept values scaled by 1/(1-p)");
    // the mask depends on the step
    assert_ne!(y, v64(&ops::dropout_forward(&x, 0.25, 4, 1, 0).unwrap()));
}

#[test]
fn bad_arguments_are_errors() {
    let x = t32(&[1.0; 6], &[2, 3]);
    for p in [1.0f32, 1.5, -0.1, f32::NAN] {
        assert!(ops::dropout_forward(&x, p, 0, 0, 0).is_err(), "p = {p}");
        assert!(ops::dropout_backward(&x, p, 0, 0, 0).is_err(), "p = {p}");
    }
    let ab = t32(&[0.5, 0.5], &[2]);
    let scalar = Tensor::from_vec(vec![1.0f32], Vec::<usize>::new()).unwrap();
    assert!(ops::noise_add(&scalar, &ab, &ab, 0, 0, 0).is_err(), "rank 0 has no batch dim");
    assert!(ops::noise_add(&x, &t32(&[0.5; 3], &[3]), &ab, 0, 0, 0).is_err());
    assert!(ops::noise_add(&x, &ab, &t32(&[0.5; 2], &[2, 1]), 0, 0, 0).is_err());
    assert!(ops::noise_add(&x, &t64(&[0.5; 2], &[2]), &ab, 0, 0, 0).is_err());
    assert!(ops::noise_add_backward(&x, &t32(&[0.5; 3], &[3])).is_err());
    assert!(ops::mse_loss_forward(&x, &t32(&[1.0; 6], &[3, 2])).is_err());
    assert!(ops::mse_loss_forward(&x, &t64(&[1.0; 6], &[2, 3])).is_err());
    assert!(ops::mse_loss_backward(&x, &t32(&[1.0; 5], &[5]), 1.0).is_err());
    let empty = t32(&[], &[0]);
    assert!(ops::mse_loss_forward(&empty, &empty).is_err(), "the mean of nothing");
}
