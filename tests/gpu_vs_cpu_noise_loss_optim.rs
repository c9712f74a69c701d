//! The training-step ops around the model on the GPU (real CUDA and/or the
//! emulator) against the CPU reference: DDPM noising (Philox eps equal up to
//! f32 rounding of Box-Muller), the MSE loss, dropout (bit-identical masks),
//! AdamW and the EMA (in place), and the global gradient norm (f64 scalar).

mod common;

use common::{gpus, on, Report, Rng};
use diffuse_tensor::ops::{self, AdamWParams};
use diffuse_tensor::{Device, Tensor};

const TOL: f64 = 1e-5;

/// Batch shapes: element counts that are not multiples of a Philox block
/// (4), a single element, and one spanning several 4096-element chunks.
fn shapes() -> Vec<Vec<usize>> {
    vec![vec![1, 1, 1, 1], vec![3, 1, 5, 7], vec![1, 3, 7, 9], vec![3, 13, 11, 13], vec![2, 4099]]
}

#[test]
fn noise_add_matches_cpu() {
    let Some(devs) = gpus("noise_add_matches_cpu") else { return };
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("noise", gpu);
        let mut rng = Rng::new(101);
        for shape in shapes() {
            let n = shape[0];
            let x0 = rng.tensor(&shape);
            let a = rng.tensor_in(&[n], 0.05, 1.0);
            let b = Tensor::from_vec(
                a.to_vec_f32().unwrap().iter().map(|&a| (1.0 - a * a).sqrt()).collect::<Vec<f32>>(),
                [n],
            )
            .unwrap();
            let (ag, bg) = (on(&a, dev), on(&b, dev));
            for (seed, step, stream) in [(0u64, 0u32, 0u32), (42, 7, 3), (u64::MAX - 5, u32::MAX, 1 << 31)] {
                let case = format!("{shape:?} seed {seed} step {step} stream {stream}");
                let o = ops::noise_add(&x0, &a, &b, seed, step, stream).unwrap();
                let og = ops::noise_add(&on(&x0, dev), &ag, &bg, seed, step, stream).unwrap();
                r.check("noise_add eps", &case, &og.eps, &o.eps, 1e-6);
                r.check("noise_add x_t", &case, &og.x_t, &o.x_t, TOL);
            }
            let case = format!("{shape:?}");
            let dxt = rng.tensor(&shape);
            r.check(
                "noise_add_backward",
                &case,
                &ops::noise_add_backward(&on(&dxt, dev), &ag).unwrap(),
                &ops::noise_add_backward(&dxt, &a).unwrap(),
                TOL,
            );
        }
    }
}

#[test]
fn mse_loss_matches_cpu() {
    let Some(devs) = gpus("mse_loss_matches_cpu") else { return };
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("loss", gpu);
        let mut rng = Rng::new(111);
        let mut shapes = shapes();
        shapes.push(vec![3, 1, 2, 8192 * 20 + 1]); // 241 chunks: one per thread of the final block
        shapes.push(vec![1, 4096 * 300 + 7]); // 301 chunks: the final block's threads take two each
        for shape in shapes {
            let case = format!("{shape:?}");
            let (p, t) = (rng.tensor(&shape), rng.tensor(&shape));
            let (pg, tg) = (on(&p, dev), on(&t, dev));
            let l = ops::mse_loss_forward(&p, &t).unwrap();
            let lg = ops::mse_loss_forward(&pg, &tg).unwrap();
            r.check("mse_loss_forward", &case, &lg, &l, TOL);
            for dloss in [1.0, 0.37] {
                r.check(
                    "mse_loss_backward",
                    &format!("{case} dloss {dloss}"),
                    &ops::mse_loss_backward(&pg, &tg, dloss).unwrap(),
                    &ops::mse_loss_backward(&p, &t, dloss).unwrap(),
                    TOL,
                );
            }
        }
    }
}

#[test]
fn dropout_masks_are_bit_identical() {
    let Some(devs) = gpus("dropout_masks_are_bit_identical") else { return };
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("dropout", gpu);
        let mut rng = Rng::new(121);
        for shape in shapes() {
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
        assert!(ops::dropout_forward(&on(&rng.tensor(&[3]), dev), 1.0, 0, 0, 0).is_err(), "p = 1 on {}", gpu.label);
    }
}

#[test]
fn adamw_and_ema_match_cpu() {
    let Some(devs) = gpus("adamw_and_ema_match_cpu") else { return };
    let h = AdamWParams { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("optim", gpu);
        let mut rng = Rng::new(131);
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
                r.check("adamw_step param", &sc, &pg, &p, TOL);
                r.check("adamw_step m", &sc, &mg, &m, TOL);
                r.check("adamw_step v", &sc, &vg, &v, TOL);
            }
            assert_ne!(p_before.to_vec_f32().unwrap(), pg.to_vec_f32().unwrap(), "the step changed nothing");

            let mut e = rng.tensor(&shape);
            let mut eg = on(&e, dev);
            for decay in [0.999, 0.5, 0.0, 1.0] {
                ops::ema_update(&mut e, &p, decay).unwrap();
                ops::ema_update(&mut eg, &pg, decay).unwrap();
                r.check("ema_update", &format!("{case} decay {decay}"), &eg, &e, TOL);
            }
        }
    }
}

#[test]
fn global_l2_norm_matches_cpu() {
    let Some(devs) = gpus("global_l2_norm_matches_cpu") else { return };
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("optim", gpu);
        let mut rng = Rng::new(141);
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
}
