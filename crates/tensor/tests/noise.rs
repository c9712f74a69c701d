//! noise_add (the forward diffusion step): an oracle that recomputes the
//! Philox draws element by element (the spec), finite differences,
//! statistics, purity, determinism, error cases, and every device against
//! the CPU reference.

mod common;
use common::*;
use diffuse_tensor::{ops, philox, Tensor};
use proptest::prelude::*;

fn round32(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| x as f32 as f64).collect()
}

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

fn batch() -> impl Strategy<Value = Vec<usize>> {
    (awkward(4), awkward(3), awkward(9), awkward(9)).prop_map(|(n, c, h, w)| vec![n, c, h, w])
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

proptest! {
    #![proptest_config(proptest_config(24))]

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
        // a x0 + b eps rounds twice and may cancel: measured against |a x0| + |b eps|.
        let per = x0.len() / n;
        let xt_mag: Vec<f64> = (0..x0.len()).map(|i| (a[i / per] * x0[i]).abs() + (b[i / per] * eps_want[i]).abs()).collect();
        assert_close_scaled("noise_add x_t", &v64(&out.x_t), &xt_want, &xt_mag, 1e-5);
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
    // several Philox chunks, not a multiple of one
    let shape = [3, 1, 211, 197];
    let p = t32(&TestRng::new(77).vec(numel(&shape)), &shape);
    let (a, b) = (t32(&[0.3, 0.6, 0.9], &[3]), t32(&[0.9, 0.6, 0.3], &[3]));
    let run = || ops::noise_add(&p, &a, &b, 1, 2, 3).unwrap().x_t.to_vec_f32().unwrap();
    assert_eq!(run(), run());
    assert_eq!(run(), one_thread(run));
    // and the big tensors (many Philox chunks) still match the per-element oracle
    let (xt_want, eps_want) = oracle_noise(&v64(&p), &v64(&a), &v64(&b), 1, 2, 3);
    let out = ops::noise_add(&p, &a, &b, 1, 2, 3).unwrap();
    assert_eq!(v64(&out.eps), eps_want.clone(), "large eps");
    // a x0 + b eps may cancel: measured against |a x0| + |b eps|
    let (pv, av, bv, per) = (v64(&p), v64(&a), v64(&b), numel(&shape) / 3);
    let mag: Vec<f64> =
        (0..pv.len()).map(|i| (av[i / per] * pv[i]).abs() + (bv[i / per] * eps_want[i]).abs()).collect();
    assert_close_scaled("large x_t", &v64(&out.x_t), &xt_want, &mag, 1e-6);
}

#[test]
fn bad_arguments_are_errors() {
    let x = t32(&[1.0; 6], &[2, 3]);
    let ab = t32(&[0.5, 0.5], &[2]);
    let scalar = Tensor::from_vec(vec![1.0f32], Vec::<usize>::new()).unwrap();
    assert!(ops::noise_add(&scalar, &ab, &ab, 0, 0, 0).is_err(), "rank 0 has no batch dim");
    assert!(ops::noise_add(&x, &t32(&[0.5; 3], &[3]), &ab, 0, 0, 0).is_err());
    assert!(ops::noise_add(&x, &ab, &t32(&[0.5; 2], &[2, 1]), 0, 0, 0).is_err());
    assert!(ops::noise_add(&x, &t64(&[0.5; 2], &[2]), &ab, 0, 0, 0).is_err());
    assert!(ops::noise_add_backward(&x, &t32(&[0.5; 3], &[3])).is_err());
}

// ------------------------------------- every device against the CPU reference

/// Tolerance of a device's result against the CPU reference (relative, whole tensor).
const DEVICE_TOL: f64 = 1e-5;

/// Batch shapes: element counts that are not multiples of a Philox block
/// (4), a single element, and one spanning several 4096-element chunks.
fn device_shapes() -> Vec<Vec<usize>> {
    vec![vec![1, 1, 1, 1], vec![3, 1, 5, 7], vec![1, 3, 7, 9], vec![3, 13, 11, 13], vec![2, 4099]]
}

fn noise_add_forward_and_backward(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    let mut r = Report::new("noise", dut);
    let mut rng = TensorRng::new(101);
    for shape in device_shapes() {
        let n = shape[0];
        let x0 = rng.tensor(&shape);
        let a = rng.tensor_in(&[n], 0.05, 1.0);
        let b =
            Tensor::from_vec(a.to_vec_f32().unwrap().iter().map(|&a| (1.0 - a * a).sqrt()).collect::<Vec<f32>>(), [n])
                .unwrap();
        let (ag, bg) = (on(&a, dev), on(&b, dev));
        for (seed, step, stream) in [(0u64, 0u32, 0u32), (42, 7, 3), (u64::MAX - 5, u32::MAX, 1 << 31)] {
            let case = format!("{shape:?} seed {seed} step {step} stream {stream}");
            let o = ops::noise_add(&x0, &a, &b, seed, step, stream).unwrap();
            let og = ops::noise_add(&on(&x0, dev), &ag, &bg, seed, step, stream).unwrap();
            r.check("noise_add eps", &case, &og.eps, &o.eps, 1e-6);
            r.check("noise_add x_t", &case, &og.x_t, &o.x_t, DEVICE_TOL);
        }
        let case = format!("{shape:?}");
        let dxt = rng.tensor(&shape);
        r.check(
            "noise_add_backward",
            &case,
            &ops::noise_add_backward(&on(&dxt, dev), &ag).unwrap(),
            &ops::noise_add_backward(&dxt, &a).unwrap(),
            DEVICE_TOL,
        );
    }
}

per_device!(
    noise_add_forward_and_backward,
    noise_add_forward_and_backward_cpu,
    noise_add_forward_and_backward_emu,
    noise_add_forward_and_backward_cuda
);

/// Units in the last place between two f32 of one sign.
fn ulps(a: f32, b: f32) -> u32 {
    assert_eq!(a.is_sign_negative(), b.is_sign_negative(), "{a} and {b} differ in sign");
    a.to_bits().abs_diff(b.to_bits())
}

/// What ARCHITECTURE.md ("Determinism across devices") promises of the
/// noise: the raw Philox words are the CPU's on every device; the normals
/// and x_t are the CPU's bit for bit on the emulator (the same libm), and on
/// CUDA the normals are within 8 ulp (its logf/sinf/cosf) while x_t is
/// exactly a x0 + b eps of the device's own eps, rounded twice as on the
/// CPU (noise.cu is compiled with --fmad=false).
fn philox_words_and_normals(dut: &DeviceUnderTest) {
    use diffuse_tensor::gpu::launch::noise::philox_words;
    use diffuse_tensor::Device;
    let mut r = Report::new("noise determinism", dut);
    let mut rng = TensorRng::new(303);
    for (seed, step, stream, len) in
        [(0u64, 0u32, 0u32, 1usize), (42, 7, 3, 4099), (u64::MAX - 5, u32::MAX, 1 << 31, 1001)]
    {
        let case = format!("seed {seed} step {step} stream {stream} len {len}");
        let want: Vec<u32> =
            (0..len as u64).map(|i| philox::block_bits(seed, step, stream, i / 4)[(i % 4) as usize]).collect();
        if let Device::Gpu(gpu) = &dut.device {
            assert_eq!(
                philox_words(gpu, len, seed, step, stream).unwrap(),
                want,
                "Philox words [{case}] on {}",
                dut.label
            );
        }

        let shape = [1, len];
        let x0 = rng.tensor(&shape);
        let (a, b) = (t32(&[0.6], &[1]), t32(&[0.8], &[1]));
        let o = ops::noise_add(&x0, &a, &b, seed, step, stream).unwrap();
        let og = ops::noise_add(&on(&x0, &dut.device), &on(&a, &dut.device), &on(&b, &dut.device), seed, step, stream)
            .unwrap();
        if dut.backend == Backend::Cuda {
            let (eg, ec) = (og.eps.to_vec_f32().unwrap(), o.eps.to_vec_f32().unwrap());
            let worst = eg.iter().zip(&ec).map(|(&g, &c)| ulps(g, c)).max().unwrap_or(0);
            log(&format!("noise eps [{case}] on {}: worst {worst} ulp from the CPU", dut.label));
            assert!(worst <= 8, "eps [{case}]: {worst} ulp from the CPU");
            let xt_want: Vec<f32> =
                x0.to_vec_f32().unwrap().iter().zip(&eg).map(|(&x, &e)| 0.6f32 * x + 0.8f32 * e).collect();
            r.check_exact(
                "noise_add x_t from the device's eps",
                &case,
                &og.x_t,
                &Tensor::from_vec(xt_want, shape).unwrap(),
            );
        } else {
            r.check_exact("noise_add eps", &case, &og.eps, &o.eps);
            r.check_exact("noise_add x_t", &case, &og.x_t, &o.x_t);
        }
    }
}

per_device!(
    philox_words_and_normals,
    philox_words_and_normals_cpu,
    philox_words_and_normals_emu,
    philox_words_and_normals_cuda
);
