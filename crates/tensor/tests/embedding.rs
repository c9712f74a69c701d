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
