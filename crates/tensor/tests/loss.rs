//! The MSE loss: f64 oracle, finite differences, determinism, error cases,
//! and every device against the CPU reference.

mod common;
use common::*;
use diffuse_tensor::ops;
use proptest::prelude::*;

fn round32(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| x as f32 as f64).collect()
}

fn oracle_mse(p: &[f64], t: &[f64]) -> f64 {
    let mut s = 0.0;
    for i in 0..p.len() {
        s += (p[i] - t[i]) * (p[i] - t[i]);
    }
    s / p.len() as f64
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
}

#[test]
fn large_results_are_bit_identical_across_runs_and_thread_counts() {
    // several reduction chunks, not a multiple of one
    let shape = [3, 1, 211, 197];
    let m = numel(&shape);
    let mut rng = TestRng::new(77);
    let (p, t) = (t32(&rng.vec(m), &shape), t32(&rng.vec(m), &shape));
    let run = || ops::mse_loss_forward(&p, &t).unwrap().to_vec_f32().unwrap();
    assert_eq!(run(), run());
    assert_eq!(run(), one_thread(run));
}

#[test]
fn bad_arguments_are_errors() {
    let x = t32(&[1.0; 6], &[2, 3]);
    assert!(ops::mse_loss_forward(&x, &t32(&[1.0; 6], &[3, 2])).is_err());
    assert!(ops::mse_loss_forward(&x, &t64(&[1.0; 6], &[2, 3])).is_err());
    assert!(ops::mse_loss_backward(&x, &t32(&[1.0; 5], &[5]), 1.0).is_err());
    let empty = t32(&[], &[0]);
    assert!(ops::mse_loss_forward(&empty, &empty).is_err(), "the mean of nothing");
}

// ------------------------------------- every device against the CPU reference

/// Tolerance of a device's result against the CPU reference (relative, whole tensor).
const DEVICE_TOL: f64 = 1e-5;

/// Batch shapes: element counts that are not multiples of a Philox block
/// (4), a single element, and one spanning several 4096-element chunks.
fn device_shapes() -> Vec<Vec<usize>> {
    vec![vec![1, 1, 1, 1], vec![3, 1, 5, 7], vec![1, 3, 7, 9], vec![3, 13, 11, 13], vec![2, 4099]]
}

fn mse_loss_forward_and_backward(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    let mut r = Report::new("loss", dut).exact_on(dut, &[Backend::Emu, Backend::Cuda]);
    let mut rng = TensorRng::new(111);
    let mut shapes = device_shapes();
    shapes.push(vec![3, 1, 2, 8192 * 20 + 1]); // 241 chunks: one per thread of the final block
    shapes.push(vec![1, 4096 * 300 + 7]); // 301 chunks: the final block's threads take two each
    for shape in shapes {
        let case = format!("{shape:?}");
        let (p, t) = (rng.tensor(&shape), rng.tensor(&shape));
        let (pg, tg) = (on(&p, dev), on(&t, dev));
        let l = ops::mse_loss_forward(&p, &t).unwrap();
        let lg = ops::mse_loss_forward(&pg, &tg).unwrap();
        r.check("mse_loss_forward", &case, &lg, &l, DEVICE_TOL);
        for dloss in [1.0, 0.37] {
            r.check(
                "mse_loss_backward",
                &format!("{case} dloss {dloss}"),
                &ops::mse_loss_backward(&pg, &tg, dloss).unwrap(),
                &ops::mse_loss_backward(&p, &t, dloss).unwrap(),
                DEVICE_TOL,
            );
        }
    }
}

per_device!(
    mse_loss_forward_and_backward,
    mse_loss_forward_and_backward_cpu,
    mse_loss_forward_and_backward_emu,
    mse_loss_forward_and_backward_cuda
);
