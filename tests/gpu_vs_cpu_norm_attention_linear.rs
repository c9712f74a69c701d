//! Group norm (fused SiLU on and off), single-head attention and the linear
//! layer on the GPU (real CUDA and/or the emulator) against the CPU
//! reference: every forward output (including the saved statistics and the
//! log-sum-exp) and every backward output.

mod common;

use common::{gpus, norm, on, Report, Rng};
use diffuse_tensor::ops;

const TOL: f64 = 1e-5;

#[test]
fn group_norm_matches_cpu() {
    let Some(devs) = gpus("group_norm_matches_cpu") else { return };
    // (shape, groups): channels 3/7/13/12/32, odd H*W, an [N, C] input, and
    // slabs longer than a 256-thread block
    let cases: &[(&[usize], usize)] = &[
        (&[1, 3, 5, 3], 1),
        (&[3, 7, 3, 5], 7),
        (&[3, 13, 3, 3], 1),
        (&[1, 12, 7, 5], 4),
        (&[3, 32, 7, 7], 8),
        (&[2, 8, 17, 19], 2),
        (&[2, 32, 28, 28], 8),
        (&[3, 12], 4),
        (&[1, 7], 1),
    ];
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("group_norm", gpu);
        let mut rng = Rng::new(21);
        for &(shape, groups) in cases {
            for fuse in [false, true] {
                let case = format!("{shape:?} G{groups} silu={fuse}");
                let c = shape[1];
                // a non-zero mean and scale, as activations have
                let x = rng.tensor_in(shape, -1.5, 2.5);
                let gamma = rng.tensor_in(&[c], 0.5, 1.5);
                let beta = rng.tensor_in(&[c], -0.5, 0.5);
                let (xg, gg, bg) = (on(&x, dev), on(&gamma, dev), on(&beta, dev));
                let f = ops::group_norm_forward(&x, &gamma, &beta, groups, 1e-6, fuse).unwrap();
                let fg = ops::group_norm_forward(&xg, &gg, &bg, groups, 1e-6, fuse).unwrap();
                r.check("group_norm_forward y", &case, &fg.y, &f.y, TOL);
                r.check("group_norm_forward mean", &case, &fg.mean, &f.mean, TOL);
                r.check("group_norm_forward rstd", &case, &fg.rstd, &f.rstd, TOL);

                let dy = rng.tensor(shape);
                let dyg = on(&dy, dev);
                let b = ops::group_norm_backward(&dy, &x, &gamma, &beta, &f.mean, &f.rstd, groups, fuse).unwrap();
                let bg2 = ops::group_norm_backward(&dyg, &xg, &gg, &bg, &fg.mean, &fg.rstd, groups, fuse).unwrap();
                r.check("group_norm_backward dx", &case, &bg2.dx, &b.dx, TOL);
                r.check("group_norm_backward dgamma", &case, &bg2.dgamma, &b.dgamma, TOL);
                r.check("group_norm_backward dbeta", &case, &bg2.dbeta, &b.dbeta, TOL);
            }
        }
    }
}

#[test]
fn attention_matches_cpu() {
    let Some(devs) = gpus("attention_matches_cpu") else { return };
    // (B, C, N): N = 1, 7, 49 (two key tiles, a partial one), and 70 (three
    // tiles); C = 3/7/13/64, and 256 / 512, where the tiles shrink to fit
    // shared memory (backward T = 16 and 8, forward BQ = 16)
    let cases = [
        (1, 3, 1),
        (3, 7, 1),
        (1, 13, 7),
        (3, 7, 7),
        (1, 7, 49),
        (3, 13, 49),
        (1, 64, 49),
        (2, 3, 70),
        (1, 256, 70),
        (2, 512, 21),
    ];
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("attention", gpu);
        let mut rng = Rng::new(31);
        for (b, c, n) in cases {
            let case = format!("B{b} C{c} N{n}");
            let shape = [b, c, n];
            // scores of a few units, so softmax is neither flat nor one-hot
            let (q, k, v) = (rng.tensor_in(&shape, -2.0, 2.0), rng.tensor_in(&shape, -2.0, 2.0), rng.tensor(&shape));
            let (qg, kg, vg) = (on(&q, dev), on(&k, dev), on(&v, dev));
            let f = ops::attention_forward(&q, &k, &v).unwrap();
            let fg = ops::attention_forward(&qg, &kg, &vg).unwrap();
            r.check("attention_forward out", &case, &fg.out, &f.out, TOL);
            r.check("attention_forward lse", &case, &fg.lse, &f.lse, TOL);

            let p = ops::attention_weights(&q, &k).unwrap();
            let pg = ops::attention_weights(&qg, &kg).unwrap();
            r.check("attention_weights", &case, &pg, &p, TOL);

            let dout = rng.tensor(&shape);
            let doutg = on(&dout, dev);
            let g = ops::attention_backward(&dout, &q, &k, &v, &f.out, &f.lse).unwrap();
            let gg = ops::attention_backward(&doutg, &qg, &kg, &vg, &fg.out, &fg.lse).unwrap();
            r.check("attention_backward dv", &case, &gg.dv, &g.dv, TOL);
            // With one token the softmax is constant: dq and dk are
            // analytically zero and both devices hold rounding noise. Their
            // error is measured against the scale of the other gradients.
            let floor = if n == 1 { norm(&g.dv.to_vec_f32().unwrap()) } else { 0.0 };
            r.check_floor("attention_backward dq", &case, &gg.dq, &g.dq, TOL, floor);
            r.check_floor("attention_backward dk", &case, &gg.dk, &g.dk, TOL, floor);
        }
    }
}

#[test]
fn linear_matches_cpu() {
    let Some(devs) = gpus("linear_matches_cpu") else { return };
    // (N, In, Out): rows and features across the 64-wide tiles
    let cases = [(1, 3, 7), (3, 13, 7), (3, 7, 13), (1, 67, 65), (70, 13, 3), (3, 128, 64)];
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("linear", gpu);
        let mut rng = Rng::new(41);
        for (n, d_in, d_out) in cases {
            let case = format!("N{n} In{d_in} Out{d_out}");
            let (x, w, b) = (rng.tensor(&[n, d_in]), rng.tensor(&[d_out, d_in]), rng.tensor(&[d_out]));
            let (xg, wg, bg) = (on(&x, dev), on(&w, dev), on(&b, dev));
            let y = ops::linear_forward(&x, &w, Some(&b)).unwrap();
            r.check("linear_forward (bias)", &case, &ops::linear_forward(&xg, &wg, Some(&bg)).unwrap(), &y, TOL);
            let y0 = ops::linear_forward(&x, &w, None).unwrap();
            r.check("linear_forward (no bias)", &case, &ops::linear_forward(&xg, &wg, None).unwrap(), &y0, TOL);

            let dy = rng.tensor(&[n, d_out]);
            let g = ops::linear_backward(&dy, &x, &w).unwrap();
            let gg = ops::linear_backward(&on(&dy, dev), &xg, &wg).unwrap();
            r.check("linear_backward dx", &case, &gg.dx, &g.dx, TOL);
            r.check("linear_backward dw", &case, &gg.dw, &g.dw, TOL);
            r.check("linear_backward db", &case, &gg.db, &g.db, TOL);
        }
    }
}
