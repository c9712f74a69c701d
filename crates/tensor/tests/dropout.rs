//! Dropout: an oracle that recomputes the Philox keep bits element by
//! element (the spec), finite differences, adjoint, rate, determinism,
//! error cases, and every device against the CPU reference (bit-identical
//! masks).

mod common;
use common::*;
use diffuse_tensor::{ops, philox};
use proptest::prelude::*;

fn round32(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| x as f32 as f64).collect()
}

fn oracle_dropout(x: &[f64], p: f32, seed: u64, step: u32, stream: u32) -> Vec<f64> {
    let threshold = philox::mask_threshold(p);
    let mut y = vec![0.0; x.len()];
    for i in 0..x.len() {
        if philox::keep_mask(philox::mask_bits(seed, step, stream, i as u64), threshold) {
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
    #![proptest_config(proptest_config(24))]

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
fn large_results_are_bit_identical_across_runs_and_thread_counts() {
    // several Philox chunks, not a multiple of one
    let shape = [3, 1, 211, 197];
    let p = t32(&TestRng::new(77).vec(numel(&shape)), &shape);
    let run = || ops::dropout_forward(&p, 0.3, 1, 2, 3).unwrap().to_vec_f32().unwrap();
    assert_eq!(run(), run());
    assert_eq!(run(), one_thread(run));
    // and the big tensor (many Philox chunks) still matches the per-element oracle
    let want = oracle_dropout(&v64(&p), 0.3, 1, 2, 3);
    assert_close("large dropout", &v64(&ops::dropout_forward(&p, 0.3, 1, 2, 3).unwrap()), &want, 1e-6);
}

#[test]
fn a_kept_mask_gives_the_drawn_masks_values_bit_for_bit() {
    // Against the per-element oracle (forward) and the mask drawn again
    // (backward): sizes of one element, inside one 64-bit word, several
    // Philox chunks that are not a multiple of 64, and shard offsets on and
    // off a Philox block (the element-by-element path).
    let mut rng = TestRng::new(2026);
    for (len, offset, p) in
        [(1, 0, 0.5f32), (61, 0, 0.1), (61, 3, 0.1), (40_003, 0, 0.3), (40_003, 13, 0.3), (33_000, 8, 0.9)]
    {
        let x = t32(&round32(rng.vec(len)), &[len]);
        let dy = t32(&round32(rng.vec(len)), &[len]);
        let (y, mask) = ops::dropout_forward_keeping_mask(&x, p, 9, 4, 2, offset).unwrap();
        let mask = mask.expect("a CPU forward keeps its mask");
        let drawn = ops::dropout_forward_at(&x, p, 9, 4, 2, offset).unwrap();
        assert_eq!(y.to_vec_f32().unwrap(), drawn.to_vec_f32().unwrap(), "forward, {len} at {offset}");
        let again = ops::dropout_backward_at(&dy, p, 9, 4, 2, offset).unwrap().to_vec_f32().unwrap();
        let kept = ops::dropout_backward_with_mask(&dy, &mask).unwrap().to_vec_f32().unwrap();
        assert_eq!(kept, again, "backward, {len} at {offset}");
        let zeros = kept.iter().filter(|&&v| v == 0.0).count() as f64 / len as f64;
        assert!(len < 1000 || (zeros - p as f64).abs() < 0.02, "dropped {zeros} for p = {p}");
        assert_eq!(kept, one_thread(|| ops::dropout_backward_with_mask(&dy, &mask).unwrap().to_vec_f32().unwrap()));
    }
    let (_, mask) = ops::dropout_forward_keeping_mask(&t32(&[1.0; 6], &[6]), 0.5, 0, 0, 0, 0).unwrap();
    let err = ops::dropout_backward_with_mask(&t32(&[1.0; 7], &[7]), &mask.unwrap()).unwrap_err().to_string();
    assert!(err.contains("gradient of 7 elements for a mask of 6"), "{err}");
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
        assert!(ops::dropout_forward_keeping_mask(&x, p, 0, 0, 0, 0).is_err(), "p = {p}");
    }
}

// ------------------------------------- every device against the CPU reference

/// Batch shapes: element counts that are not multiples of a Philox block
/// (4), a single element, and one spanning several 4096-element chunks.
fn device_shapes() -> Vec<Vec<usize>> {
    vec![vec![1, 1, 1, 1], vec![3, 1, 5, 7], vec![1, 3, 7, 9], vec![3, 13, 11, 13], vec![2, 4099]]
}

fn dropout_masks_are_bit_identical(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    let mut r = Report::new("dropout", dut);
    let mut rng = TensorRng::new(121);
    for shape in device_shapes() {
        let x = rng.tensor(&shape);
        let xg = on(&x, dev);
        for (p, seed, step, stream) in [(0.0f32, 1u64, 0u32, 0u32), (0.1, 7, 3, 2), (0.5, u64::MAX, 9, 11)] {
            let case = format!("{shape:?} p {p} seed {seed} step {step} stream {stream}");
            let y = ops::dropout_forward(&x, p, seed, step, stream).unwrap();
            let yg = ops::dropout_forward(&xg, p, seed, step, stream).unwrap();
            r.check_exact("dropout_forward", &case, &yg, &y);
            let dx = ops::dropout_backward(&x, p, seed, step, stream).unwrap();
            let dxg = ops::dropout_backward(&xg, p, seed, step, stream).unwrap();
            r.check_exact("dropout_backward", &case, &dxg, &dx);
        }
    }
    assert!(ops::dropout_forward(&on(&rng.tensor(&[3]), dev), 1.0, 0, 0, 0).is_err(), "p = 1 on {}", dut.label);
}

per_device!(
    dropout_masks_are_bit_identical,
    dropout_masks_are_bit_identical_cpu,
    dropout_masks_are_bit_identical_emu,
    dropout_masks_are_bit_identical_cuda
);
