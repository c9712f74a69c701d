//! The sinusoidal timestep embedding against its formula.

mod common;
use common::*;
use diffuse_tensor::{ops, Tensor};
use proptest::prelude::*;

/// The DDPM reference formula, written out in f64.
fn oracle_embedding(t: &[f64], dim: usize) -> Vec<f64> {
    let half = dim / 2;
    let mut out = vec![0.0; t.len() * dim];
    for (n, &tn) in t.iter().enumerate() {
        for k in 0..half {
            // half == 1 has the single frequency 1 (k = 0 of every other width)
            let freq = if half == 1 { 1.0 } else { (-(k as f64) * (10000f64).ln() / (half as f64 - 1.0)).exp() };
            out[n * dim + k] = (tn * freq).sin();
            out[n * dim + half + k] = (tn * freq).cos();
        }
    }
    out
}

proptest! {
    #![proptest_config(proptest_config(32))]

    #[test]
    fn embedding_matches_formula(n in awkward(13), dim in 2usize..=130, seed in any::<u64>(), fractional in any::<bool>()) {
        let mut rng = TestRng::new(seed);
        // integer timesteps as the trainer feeds them, or arbitrary (f32-exact) values
        let t: Vec<f64> = rng
            .vec_in(n, 0.0, 1000.0)
            .into_iter()
            .map(|v| if fractional { v as f32 as f64 } else { v.floor() })
            .collect();
        let want = oracle_embedding(&t, dim);
        let e32 = ops::timestep_embedding(&t32(&t, &[n]), dim).unwrap();
        prop_assert_eq!(e32.dims(), &[n, dim]);
        assert_close("timestep embedding f32", &v64(&e32), &want, 1e-5);
        let e64 = ops::timestep_embedding(&t64(&t, &[n]), dim).unwrap();
        assert_close("timestep embedding f64", &v64(&e64), &want, 1e-12);
    }
}

#[test]
fn t_zero_gives_zero_sines_and_unit_cosines() {
    for dim in [2, 3, 8, 9, 128] {
        let e = v64(&ops::timestep_embedding(&t32(&[0.0, 0.0], &[2]), dim).unwrap());
        let half = dim / 2;
        for row in e.chunks(dim) {
            assert!(row[..half].iter().all(|&v| v == 0.0), "dim {dim}: sines {row:?}");
            assert!(row[half..2 * half].iter().all(|&v| v == 1.0), "dim {dim}: cosines {row:?}");
        }
    }
}

#[test]
fn odd_dim_pads_a_zero_column() {
    let t = [1.0, 17.0, 999.0];
    let e = v64(&ops::timestep_embedding(&t32(&t, &[3]), 7).unwrap());
    let even = v64(&ops::timestep_embedding(&t32(&t, &[3]), 6).unwrap());
    for (row, erow) in e.chunks(7).zip(even.chunks(6)) {
        assert_eq!(row[6], 0.0);
        assert_eq!(&row[..6], erow, "the first 2*half columns do not depend on the padding");
    }
}

#[test]
fn first_frequency_is_one_and_last_is_one_ten_thousandth() {
    let half = 16;
    let e = v64(&ops::timestep_embedding(&t64(&[1.0], &[1]), 2 * half).unwrap());
    assert!((e[0] - 1f64.sin()).abs() < 1e-15);
    assert!((e[half - 1] - 1e-4f64.sin()).abs() < 1e-15);
}

#[test]
fn bad_arguments_are_errors() {
    let t = t32(&[1.0, 2.0], &[2]);
    assert!(ops::timestep_embedding(&t, 0).is_err());
    assert!(ops::timestep_embedding(&t, 1).unwrap_err().to_string().contains("at least 2"));
    assert!(ops::timestep_embedding(&t32(&[1.0, 2.0], &[2, 1]), 8).is_err());
}

// ------------------------------------- every device against the CPU reference

/// Tolerance of a device's result against the CPU reference (relative, whole tensor).
const DEVICE_TOL: f64 = 1e-5;

fn timestep_embedding_on_device(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    let mut r = Report::new("embedding", dut).exact_on(dut, &[Backend::Emu]);
    let mut rng = TensorRng::new(81);
    for n in [1, 3, 64] {
        // integer timesteps as the trainer draws them, up to T = 1000
        let t: Vec<f32> = (0..n).map(|_| (rng.next_u64() % 1000) as f32).collect();
        let t = Tensor::from_vec(t, [n]).unwrap();
        let tg = on(&t, dev);
        for dim in [2, 3, 7, 16, 33, 128] {
            let case = format!("N{n} dim {dim}");
            r.check(
                "timestep_embedding",
                &case,
                &ops::timestep_embedding(&tg, dim).unwrap(),
                &ops::timestep_embedding(&t, dim).unwrap(),
                DEVICE_TOL,
            );
        }
    }
}

per_device!(
    timestep_embedding_on_device,
    timestep_embedding_on_device_cpu,
    timestep_embedding_on_device_emu,
    timestep_embedding_on_device_cuda
);

// ------------------------------------------------------------- class embedding

/// Gather and scatter-sum written out in f64 over plain loops.
fn oracle_class_embedding(table: &[f64], labels: &[usize], dim: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(labels.len() * dim);
    for &k in labels {
        for d in 0..dim {
            out.push(table[k * dim + d]);
        }
    }
    out
}

fn oracle_class_embedding_backward(dout: &[f64], labels: &[usize], rows: usize, dim: usize) -> Vec<f64> {
    let mut dtable = vec![0.0; rows * dim];
    for (n, &k) in labels.iter().enumerate() {
        for d in 0..dim {
            dtable[k * dim + d] += dout[n * dim + d];
        }
    }
    dtable
}

proptest! {
    #![proptest_config(proptest_config(32))]

    /// The gather is exact; the backward's f32 sums stay within n ulps of
    /// the f64 sum of |terms| (n terms at most per entry).
    #[test]
    fn class_embedding_matches_oracle(n in awkward(40), rows in 1usize..=12, dim in awkward(70), seed in any::<u64>()) {
        let mut rng = TestRng::new(seed);
        let labels: Vec<usize> = (0..n).map(|_| (rng.next_u64() % rows as u64) as usize).collect();
        let table = rng.vec_in(rows * dim, -2.0, 2.0).into_iter().map(|v| v as f32 as f64).collect::<Vec<_>>();
        let out = ops::class_embedding(&t32(&table, &[rows, dim]), &labels).unwrap();
        prop_assert_eq!(out.dims(), &[n, dim]);
        prop_assert_eq!(v64(&out), oracle_class_embedding(&table, &labels, dim));

        let dout = rng.vec_in(n * dim, -1.0, 1.0).into_iter().map(|v| v as f32 as f64).collect::<Vec<_>>();
        let want = oracle_class_embedding_backward(&dout, &labels, rows, dim);
        let scale = oracle_class_embedding_backward(&abs(&dout), &labels, rows, dim);
        let got = v64(&ops::class_embedding_backward(&t32(&dout, &[n, dim]), &labels, rows).unwrap());
        for ((g, w), s) in got.iter().zip(&want).zip(&scale) {
            prop_assert!((g - w).abs() <= n as f64 * f32::EPSILON as f64 * s, "{g} vs {w} (scale {s})");
        }
        let got64 = v64(&ops::class_embedding_backward(&t64(&dout, &[n, dim]), &labels, rows).unwrap());
        assert_close("class embedding backward f64", &got64, &want, 1e-12);
    }
}

#[test]
fn class_embedding_backward_is_adjoint_of_forward() {
    // <forward(table), dout> == <table, backward(dout)> for any table, dout.
    let (rows, dim) = (5, 9);
    let labels = [4usize, 0, 4, 2, 2, 2, 1];
    let mut rng = TestRng::new(7);
    let table = rng.vec_in(rows * dim, -1.0, 1.0);
    let dout = rng.vec_in(labels.len() * dim, -1.0, 1.0);
    let fwd = v64(&ops::class_embedding(&t64(&table, &[rows, dim]), &labels).unwrap());
    let bwd = v64(&ops::class_embedding_backward(&t64(&dout, &[labels.len(), dim]), &labels, rows).unwrap());
    let lhs = dot(&fwd, &dout);
    let rhs = dot(&table, &bwd);
    assert!((lhs - rhs).abs() < 1e-12 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    // row 3 is never picked: zero gradient
    assert!(bwd[3 * dim..4 * dim].iter().all(|&v| v == 0.0));
}

#[test]
fn class_embedding_bad_arguments_are_errors() {
    let table = t32(&[0.5; 12], &[3, 4]);
    let e = ops::class_embedding(&table, &[0, 3]).unwrap_err().to_string();
    assert!(e.contains("label 3 of sample 1"), "{e}");
    assert!(ops::class_embedding(&t32(&[0.5; 12], &[12]), &[0]).is_err());
    let dout = t32(&[0.5; 8], &[2, 4]);
    assert!(ops::class_embedding_backward(&dout, &[0], 3).is_err(), "label count must match rows");
    assert!(ops::class_embedding_backward(&dout, &[0, 5], 3).is_err());
    assert_eq!(ops::class_embedding(&table, &[]).unwrap().dims(), &[0, 4]);
}

fn class_embedding_on_device(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    let mut r = Report::new("embedding", dut);
    let mut rng = TensorRng::new(82);
    for (n, rows, dim) in [(1, 1, 1), (7, 11, 33), (64, 11, 128), (130, 3, 257)] {
        let labels: Vec<usize> = (0..n).map(|_| (rng.next_u64() % rows as u64) as usize).collect();
        let table = rng.tensor(&[rows, dim]);
        let dout = rng.tensor(&[n, dim]);
        let case = format!("N{n} rows {rows} dim {dim}");
        // same gather and the same summation order on every device: bit-identical
        r.check_exact(
            "class_embedding",
            &case,
            &ops::class_embedding(&on(&table, dev), &labels).unwrap(),
            &ops::class_embedding(&table, &labels).unwrap(),
        );
        r.check_exact(
            "class_embedding_backward",
            &case,
            &ops::class_embedding_backward(&on(&dout, dev), &labels, rows).unwrap(),
            &ops::class_embedding_backward(&dout, &labels, rows).unwrap(),
        );
    }
}

per_device!(
    class_embedding_on_device,
    class_embedding_on_device_cpu,
    class_embedding_on_device_emu,
    class_embedding_on_device_cuda
);
