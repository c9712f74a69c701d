//! AdamW, EMA and the global gradient norm against arithmetic done by hand
//! in f64, plus determinism and error cases.

mod common;
use common::*;
use diffuse_tensor::ops::{self, AdamWParams};
use diffuse_tensor::Device;
use diffuse_tensor::Tensor;
use proptest::prelude::*;

const H: AdamWParams = AdamWParams { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };

/// PyTorch's AdamW, one element at a time, straight from the formula.
fn hand_adamw(p: &mut [f64], g_per_step: &[Vec<f64>], h: &AdamWParams) -> (Vec<f64>, Vec<f64>) {
    let mut m = vec![0.0; p.len()];
    let mut v = vec![0.0; p.len()];
    for (t0, g) in g_per_step.iter().enumerate() {
        let t = (t0 + 1) as i32;
        for i in 0..p.len() {
            p[i] -= h.lr * h.weight_decay * p[i];
            m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g[i];
            v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g[i] * g[i];
            let m_hat = m[i] / (1.0 - h.beta1.powi(t));
            let v_hat = v[i] / (1.0 - h.beta2.powi(t));
            p[i] -= h.lr * m_hat / (v_hat.sqrt() + h.eps);
        }
    }
    (m, v)
}

/// The magnitudes that bound f32 rounding of AdamW's (p, m): the same
/// recursion on absolute values, every term added instead of cancelling.
/// m = beta1 m + (1 - beta1) g sums signed gradients, and p moves by
/// signed updates, so either may end near zero while its rounding does not.
fn hand_adamw_magnitudes(p0: &[f64], g_per_step: &[Vec<f64>], h: &AdamWParams) -> (Vec<f64>, Vec<f64>) {
    let mut p: Vec<f64> = p0.iter().map(|x| x.abs()).collect();
    let mut m = vec![0.0; p.len()];
    let mut v = vec![0.0; p.len()];
    for (t0, g) in g_per_step.iter().enumerate() {
        let t = (t0 + 1) as i32;
        for i in 0..p.len() {
            p[i] += h.lr * h.weight_decay * p[i];
            m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g[i].abs();
            v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g[i] * g[i];
            let m_hat = m[i] / (1.0 - h.beta1.powi(t));
            let v_hat = v[i] / (1.0 - h.beta2.powi(t));
            p[i] += h.lr * m_hat / (v_hat.sqrt() + h.eps);
        }
    }
    (p, m)
}

/// Runs `steps` AdamW steps through the op on tensors built by `make`.
fn op_adamw(
    make: fn(&[f64], &[usize]) -> Tensor,
    p0: &[f64],
    grads: &[Vec<f64>],
    shape: &[usize],
    h: &AdamWParams,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let zeros = vec![0.0; p0.len()];
    let (mut p, mut m, mut v) = (make(p0, shape), make(&zeros, shape), make(&zeros, shape));
    for (t, g) in grads.iter().enumerate() {
        ops::adamw_step(&mut p, &make(g, shape), &mut m, &mut v, h, t as u64 + 1).unwrap();
    }
    (v64(&p), v64(&m), v64(&v))
}

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn adamw_matches_hand_arithmetic(n in awkward(300), steps in 1usize..6, seed in any::<u64>(), wd in 0.0f64..0.5) {
        let mut rng = TestRng::new(seed);
        let h = AdamWParams { weight_decay: wd, ..H };
        // f32-exact inputs so the f32 run starts from the hand computation's values
        let p0: Vec<f64> = rng.vec(n).into_iter().map(|x| x as f32 as f64).collect();
        let grads: Vec<Vec<f64>> =
            (0..steps).map(|_| rng.vec(n).into_iter().map(|x| (x * 0.1) as f32 as f64).collect()).collect();
        let mut p_want = p0.clone();
        let (m_want, v_want) = hand_adamw(&mut p_want, &grads, &h);

        // p and m sum signed terms: both measured against their magnitudes
        // (v sums squares and cannot cancel)
        let (p_mag, m_mag) = hand_adamw_magnitudes(&p0, &grads, &h);
        let (p, m, v) = op_adamw(t64, &p0, &grads, &[n], &h);
        assert_close_scaled("adamw f64 param", &p, &p_want, &p_mag, 1e-13);
        assert_close_scaled("adamw f64 m", &m, &m_want, &m_mag, 1e-13);
        assert_close("adamw f64 v", &v, &v_want, 1e-13);
        // the update itself (p - p0) must be right too, not only p, which barely moves
        let d_want: Vec<f64> = p_want.iter().zip(&p0).map(|(a, b)| a - b).collect();
        let d: Vec<f64> = p.iter().zip(&p0).map(|(a, b)| a - b).collect();
        let d_mag: Vec<f64> = p_mag.iter().zip(&p0).map(|(a, b)| a - b.abs()).collect();
        assert_close_scaled("adamw f64 update", &d, &d_want, &d_mag, 1e-9);

        let (p, m, v) = op_adamw(t32, &p0, &grads, &[n], &h);
        assert_close_scaled("adamw f32 param", &p, &p_want, &p_mag, 1e-5);
        assert_close_scaled("adamw f32 m", &m, &m_want, &m_mag, 1e-5);
        assert_close("adamw f32 v", &v, &v_want, 1e-5);
    }

    #[test]
    fn ema_matches_hand_arithmetic(n in awkward(300), decay in 0.0f64..=1.0, seed in any::<u64>()) {
        let mut rng = TestRng::new(seed);
        let (e0, p) = (rng.vec(n), rng.vec(n));
        let want: Vec<f64> = (0..n).map(|i| decay * e0[i] + (1.0 - decay) * p[i]).collect();
        let mut ema = t64(&e0, &[n]);
        ops::ema_update(&mut ema, &t64(&p, &[n]), decay).unwrap();
        let mag: Vec<f64> = (0..n).map(|i| decay * e0[i].abs() + (1.0 - decay) * p[i].abs()).collect();
        assert_close_scaled("ema f64", &v64(&ema), &want, &mag, 1e-15);
        let e0_32: Vec<f64> = e0.iter().map(|&x| x as f32 as f64).collect();
        let p32: Vec<f64> = p.iter().map(|&x| x as f32 as f64).collect();
        let want32: Vec<f64> = (0..n).map(|i| decay * e0_32[i] + (1.0 - decay) * p32[i]).collect();
        let mut ema = t32(&e0, &[n]);
        ops::ema_update(&mut ema, &t32(&p, &[n]), decay).unwrap();
        // decay e + (1 - decay) p rounds both products and may cancel:
        // measured against decay |e| + (1 - decay) |p|.
        let mag32: Vec<f64> = (0..n).map(|i| decay * e0_32[i].abs() + (1.0 - decay) * p32[i].abs()).collect();
        assert_close_scaled("ema f32", &v64(&ema), &want32, &mag32, 1e-6);
    }

    #[test]
    fn global_norm_is_sqrt_of_sum_of_squares(sizes in prop::collection::vec(0usize..5000, 0..6), seed in any::<u64>()) {
        let mut rng = TestRng::new(seed);
        let data: Vec<Vec<f64>> = sizes.iter().map(|&s| rng.vec(s)).collect();
        // alternate dtypes: the norm accepts a mix
        let tensors: Vec<Tensor> = data
            .iter()
            .enumerate()
            .map(|(k, d)| if k % 2 == 0 { t32(d, &[d.len()]) } else { t64(d, &[d.len()]) })
            .collect();
        let mut sum = 0.0;
        for t in &tensors {
            for x in v64(t) {
                sum += x * x;
            }
        }
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let got = ops::global_l2_norm(&refs).unwrap();
        prop_assert!((got - sum.sqrt()).abs() <= 1e-12 * (1.0 + sum.sqrt()), "{} vs {}", got, sum.sqrt());
    }
}

#[test]
fn adamw_first_step_moves_each_weight_by_about_lr() {
    // at t = 1, m_hat = g and v_hat = g^2, so the Adam step is lr * sign(g)
    let g = [0.5, -2.0, 1e-3];
    let h = AdamWParams { weight_decay: 0.0, ..H };
    let (p, _, _) = op_adamw(t64, &[0.0; 3], &[g.to_vec()], &[3], &h);
    for (p, g) in p.iter().zip(g) {
        assert!((p + h.lr * g.signum()).abs() < 1e-7, "{p}");
    }
}

#[test]
fn global_norm_of_nothing_is_zero_and_runs_are_bit_identical() {
    assert_eq!(ops::global_l2_norm(&[]).unwrap(), 0.0);
    let mut rng = TestRng::new(2);
    let big = t32(&rng.vec(1_623_169), &[1_623_169]);
    let small = t32(&rng.vec(13), &[13]);
    let run = || ops::global_l2_norm(&[&big, &small]).unwrap();
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    assert_eq!(run().to_bits(), run().to_bits());
    assert_eq!(run().to_bits(), single.to_bits());
}

#[test]
fn bad_arguments_are_errors() {
    let p0 = t32(&[1.0; 4], &[4]);
    let (mut p, mut m, mut v) = (p0.clone(), p0.clone(), p0.clone());
    let g = t32(&[0.1; 4], &[4]);
    assert!(ops::adamw_step(&mut p, &g, &mut m, &mut v, &H, 0).is_err(), "step is 1-based");
    for bad in [
        AdamWParams { beta1: 1.0, ..H },
        AdamWParams { beta2: -0.1, ..H },
        AdamWParams { lr: f64::NAN, ..H },
        AdamWParams { eps: -1.0, ..H },
        AdamWParams { weight_decay: f64::INFINITY, ..H },
    ] {
        assert!(ops::adamw_step(&mut p, &g, &mut m, &mut v, &bad, 1).is_err(), "{bad:?}");
    }
    assert!(ops::adamw_step(&mut p, &t32(&[0.1; 3], &[3]), &mut m, &mut v, &H, 1).is_err());
    let mut v_bad = t32(&[0.0; 4], &[2, 2]);
    assert!(ops::adamw_step(&mut p, &g, &mut m, &mut v_bad, &H, 1).is_err());
    let mut m64 = t64(&[0.0; 4], &[4]);
    assert!(ops::adamw_step(&mut p, &g, &mut m64, &mut v, &H, 1).is_err());
    assert_eq!(v64(&p), v64(&p0), "failed steps must not write");

    let mut ema = p0.clone();
    assert!(ops::ema_update(&mut ema, &g, 1.5).is_err());
    assert!(ops::ema_update(&mut ema, &g, f64::NAN).is_err());
    assert!(ops::ema_update(&mut ema, &t32(&[0.1; 3], &[3]), 0.9).is_err());
    assert!(ops::ema_update(&mut ema, &t64(&[0.1; 4], &[4]), 0.9).is_err());
}

// ------------------------------------- every device against the CPU reference

fn adamw_and_ema(dut: &DeviceUnderTest) {
    let h = AdamWParams { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    let dev = &dut.device;
    let mut r = Report::new("optim", dut);
    let mut rng = TensorRng::new(131);
    for shape in [vec![1], vec![7, 13], vec![3, 13, 3, 3], vec![70001]] {
        let case = format!("{shape:?}");
        let mut p = rng.tensor(&shape);
        let mut m = Tensor::zeros(shape.clone(), diffuse_tensor::DType::F32, &Device::Cpu).unwrap();
        let mut v = m.clone();
        let (mut pg, mut mg, mut vg) = (on(&p, dev), on(&m, dev), on(&v, dev));
        // a clone that must not see the in-place updates
        let p_before = pg.clone();
        for step in 1..=3u64 {
            let g = rng.tensor(&shape);
            ops::adamw_step(&mut p, &g, &mut m, &mut v, &h, step).unwrap();
            ops::adamw_step(&mut pg, &on(&g, dev), &mut mg, &mut vg, &h, step).unwrap();
            let sc = format!("{case} step {step}");
            // bit-identical on every device: exact f64 constants and no FMA
            // contraction (optim.cu is compiled with --fmad=false)
            r.check_exact("adamw_step param", &sc, &pg, &p);
            r.check_exact("adamw_step m", &sc, &mg, &m);
            r.check_exact("adamw_step v", &sc, &vg, &v);
        }
        assert_ne!(p_before.to_vec_f32().unwrap(), pg.to_vec_f32().unwrap(), "the step changed nothing");

        let mut e = rng.tensor(&shape);
        let mut eg = on(&e, dev);
        for decay in [0.999, 0.5, 0.0, 1.0] {
            ops::ema_update(&mut e, &p, decay).unwrap();
            ops::ema_update(&mut eg, &pg, decay).unwrap();
            r.check_exact("ema_update", &format!("{case} decay {decay}"), &eg, &e);
        }
    }
}

per_device!(adamw_and_ema, adamw_and_ema_cpu, adamw_and_ema_emu, adamw_and_ema_cuda);

fn global_l2_norm(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    let mut r = Report::new("optim", dut);
    let mut rng = TensorRng::new(141);
    // lengths: empty tensors in the middle and at the end, one element,
    // several 4096-element chunks
    let lens = [7, 0, 1, 4096, 4097, 3 * 4096 + 5, 13, 0];
    let ts: Vec<Tensor> = lens.iter().map(|&n| rng.tensor(&[n])).collect();
    let tg: Vec<Tensor> = ts.iter().map(|t| on(t, dev)).collect();
    let want = ops::global_l2_norm(&ts.iter().collect::<Vec<_>>()).unwrap();
    let got = ops::global_l2_norm(&tg.iter().collect::<Vec<_>>()).unwrap();
    r.check_scalar("global_l2_norm", "8 tensors", got, want, 1e-12);
    for i in 0..ts.len() {
        let got = ops::global_l2_norm(&[&tg[i]]).unwrap();
        let want = ops::global_l2_norm(&[&ts[i]]).unwrap();
        r.check_scalar("global_l2_norm", &format!("one tensor of {}", lens[i]), got, want, 1e-12);
    }
    // host and GPU tensors mixed: summed in the order given
    let mixed: Vec<&Tensor> =
        ts.iter().zip(&tg).enumerate().map(|(i, (c, g))| if i % 3 == 0 { c } else { g }).collect();
    r.check_scalar("global_l2_norm", "mixed host and GPU", ops::global_l2_norm(&mixed).unwrap(), want, 1e-12);
    r.check_scalar("global_l2_norm", "no tensors", ops::global_l2_norm(&[]).unwrap(), 0.0, 1e-300);
}

per_device!(global_l2_norm, global_l2_norm_cpu, global_l2_norm_emu, global_l2_norm_cuda);
