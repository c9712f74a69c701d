//! Elementwise arithmetic (including the in-place forms), SiLU, the NCHW
//! layout ops, the timestep embedding and the sampling helpers on the GPU
//! (real CUDA and/or the emulator) against the CPU reference.

mod common;

use common::{gpus, on, Report, Rng};
use diffuse_tensor::{ops, Tensor};

const TOL: f64 = 1e-5;

/// Lengths: tiny, odd, and one past the 8192-block grid cap (2,097,152
/// threads), so the grid-stride loops wrap.
const LENGTHS: [usize; 4] = [1, 7, 1003, 8192 * 256 + 13];

#[test]
fn elementwise_ops_match_cpu() {
    let Some(devs) = gpus("elementwise_ops_match_cpu") else { return };
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("elementwise", gpu);
        let mut rng = Rng::new(51);
        for len in LENGTHS {
            let case = format!("len {len}");
            // a rank-3 shape for the small ones, flat for the long one
            let shape: Vec<usize> = if len == 1003 { vec![17, 59] } else { vec![len] };
            let (a, b) = (rng.tensor(&shape), rng.tensor(&shape));
            let (ag, bg) = (on(&a, dev), on(&b, dev));
            r.check("add", &case, &ops::add(&ag, &bg).unwrap(), &ops::add(&a, &b).unwrap(), TOL);
            r.check("sub", &case, &ops::sub(&ag, &bg).unwrap(), &ops::sub(&a, &b).unwrap(), TOL);
            r.check("mul", &case, &ops::mul(&ag, &bg).unwrap(), &ops::mul(&a, &b).unwrap(), TOL);
            let s = -0.3712345678901;
            r.check(
                "add_scaled",
                &case,
                &ops::add_scaled(&ag, &bg, s).unwrap(),
                &ops::add_scaled(&a, &b, s).unwrap(),
                TOL,
            );
            r.check("scale", &case, &ops::scale(&ag, s).unwrap(), &ops::scale(&a, s).unwrap(), TOL);

            let (mut acc, mut accg) = (a.clone(), ag.clone());
            ops::add_in_place(&mut acc, &b).unwrap();
            ops::add_in_place(&mut accg, &bg).unwrap();
            r.check("add_in_place", &case, &accg, &acc, TOL);
            ops::scale_in_place(&mut acc, 1.7).unwrap();
            ops::scale_in_place(&mut accg, 1.7).unwrap();
            r.check("scale_in_place", &case, &accg, &acc, TOL);
            // the clone `ag` shares its buffer with `accg` before the writes:
            // in-place ops must not show through it
            r.check("in-place leaves clones alone", &case, &ag, &a, 1e-30);
        }
    }
}

#[test]
fn in_place_ops_with_aliased_operands() {
    let Some(devs) = gpus("in_place_ops_with_aliased_operands") else { return };
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("elementwise", gpu);
        let a = Rng::new(52).tensor(&[3, 5]);
        let (mut acc, mut accg) = (a.clone(), on(&a, dev));
        // acc += (a clone sharing acc's buffer on the GPU)
        let alias = accg.clone();
        ops::add_in_place(&mut accg, &alias).unwrap();
        ops::add_in_place(&mut acc, &a).unwrap();
        r.check("add_in_place (aliased)", "x += x", &accg, &acc, TOL);
        r.check("add_in_place (aliased)", "the alias is unchanged", &alias, &a, 1e-30);
    }
}

#[test]
fn elementwise_rejects_mismatches_before_dispatch() {
    let Some(devs) = gpus("elementwise_rejects_mismatches_before_dispatch") else { return };
    let mut rng = Rng::new(53);
    for gpu in &devs {
        let dev = &gpu.device;
        let a = on(&rng.tensor(&[3, 4]), dev);
        assert!(ops::add(&a, &on(&rng.tensor(&[4, 3]), dev)).is_err(), "shape mismatch on {}", gpu.label);
        let e = ops::add(&a, &rng.tensor(&[3, 4])).unwrap_err().to_string();
        assert!(e.contains("different devices"), "{e}");
        let mut acc = a.clone();
        assert!(ops::add_in_place(&mut acc, &rng.tensor(&[3, 4])).is_err());
        let f64_t = Tensor::from_vec(vec![0f64; 12], [3, 4]).unwrap();
        assert!(ops::mul(&a, &f64_t).is_err(), "dtype/device mismatch on {}", gpu.label);
    }
}

#[test]
fn silu_matches_cpu() {
    let Some(devs) = gpus("silu_matches_cpu") else { return };
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("activation", gpu);
        let mut rng = Rng::new(61);
        for len in LENGTHS {
            let case = format!("len {len}");
            let x = rng.tensor_in(&[len], -8.0, 8.0);
            let dy = rng.tensor(&[len]);
            let (xg, dyg) = (on(&x, dev), on(&dy, dev));
            r.check("silu_forward", &case, &ops::silu_forward(&xg).unwrap(), &ops::silu_forward(&x).unwrap(), TOL);
            r.check(
                "silu_backward",
                &case,
                &ops::silu_backward(&dyg, &xg).unwrap(),
                &ops::silu_backward(&dy, &x).unwrap(),
                TOL,
            );
        }
    }
}

#[test]
fn layout_ops_match_cpu() {
    let Some(devs) = gpus("layout_ops_match_cpu") else { return };
    // (N, C, H, W): odd sizes, planes fewer and more than the 8 planes of a
    // bias-gradient block, planes longer than a warp
    let shapes = [[1, 3, 1, 1], [3, 7, 5, 3], [1, 13, 7, 9], [3, 3, 9, 11], [2, 9, 1, 40]];
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("layout", gpu);
        let mut rng = Rng::new(71);
        for [n, c, h, w] in shapes {
            let case = format!("[{n}, {c}, {h}, {w}]");
            let x = rng.tensor(&[n, c, h, w]);
            let xg = on(&x, dev);
            r.check(
                "upsample_nearest2x_forward",
                &case,
                &ops::upsample_nearest2x_forward(&xg).unwrap(),
                &ops::upsample_nearest2x_forward(&x).unwrap(),
                TOL,
            );
            let dy = rng.tensor(&[n, c, 2 * h, 2 * w]);
            r.check(
                "upsample_nearest2x_backward",
                &case,
                &ops::upsample_nearest2x_backward(&on(&dy, dev)).unwrap(),
                &ops::upsample_nearest2x_backward(&dy).unwrap(),
                TOL,
            );

            let cb = 7;
            let b = rng.tensor(&[n, cb, h, w]);
            let bg = on(&b, dev);
            let cat = ops::concat_channels(&x, &b).unwrap();
            let catg = ops::concat_channels(&xg, &bg).unwrap();
            r.check("concat_channels", &case, &catg, &cat, TOL);
            for ca in [0, c, c + 3] {
                let (s1, s2) = ops::split_channels(&cat, ca).unwrap();
                let (g1, g2) = ops::split_channels(&catg, ca).unwrap();
                let sc = format!("{case} + {cb} split at {ca}");
                r.check("split_channels", &sc, &g1, &s1, TOL);
                r.check("split_channels", &sc, &g2, &s2, TOL);
            }

            let bias = rng.tensor(&[n, c]);
            r.check(
                "add_channel_bias",
                &case,
                &ops::add_channel_bias(&xg, &on(&bias, dev)).unwrap(),
                &ops::add_channel_bias(&x, &bias).unwrap(),
                TOL,
            );
            r.check(
                "channel_bias_backward",
                &case,
                &ops::channel_bias_backward(&xg).unwrap(),
                &ops::channel_bias_backward(&x).unwrap(),
                TOL,
            );
        }
    }
}

#[test]
fn timestep_embedding_matches_cpu() {
    let Some(devs) = gpus("timestep_embedding_matches_cpu") else { return };
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("embedding", gpu);
        let mut rng = Rng::new(81);
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
                    TOL,
                );
            }
        }
    }
}

#[test]
fn sampling_ops_match_cpu() {
    let Some(devs) = gpus("sampling_ops_match_cpu") else { return };
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("sampling", gpu);
        let mut rng = Rng::new(91);
        for shape in [vec![1, 1, 3, 3], vec![3, 7, 5, 3], vec![3], vec![2, 4099]] {
            let case = format!("{shape:?}");
            let x = rng.tensor_in(&shape, -3.0, 3.0);
            let s = rng.tensor(&[shape[0]]);
            let xg = on(&x, dev);
            r.check(
                "scale_per_sample",
                &case,
                &ops::scale_per_sample(&xg, &on(&s, dev)).unwrap(),
                &ops::scale_per_sample(&x, &s).unwrap(),
                TOL,
            );
            r.check("clamp", &case, &ops::clamp(&xg, -1.0, 1.0).unwrap(), &ops::clamp(&x, -1.0, 1.0).unwrap(), TOL);
        }
        // NaN passes through clamp on both (check compares NaN positions)
        let x = Tensor::from_vec(vec![f32::NAN, -5.0, 0.25, 5.0, f32::NAN], [5]).unwrap();
        r.check(
            "clamp",
            "NaN",
            &ops::clamp(&on(&x, dev), -1.0, 1.0).unwrap(),
            &ops::clamp(&x, -1.0, 1.0).unwrap(),
            TOL,
        );
        // a rank-0 x has no samples: zeros on both
        let x0 = Tensor::from_vec(vec![2.5f32], Vec::<usize>::new()).unwrap();
        let s0 = Tensor::from_vec(Vec::<f32>::new(), [0]).unwrap();
        r.check(
            "scale_per_sample",
            "rank 0",
            &ops::scale_per_sample(&on(&x0, dev), &on(&s0, dev)).unwrap(),
            &ops::scale_per_sample(&x0, &s0).unwrap(),
            TOL,
        );
    }
}

#[test]
fn empty_tensors_match_cpu() {
    // batch 0 and empty planes: every launch path must skip or size its grid
    // correctly (the emulator rejects empty grids) and give the CPU's result
    // (empty outputs, zero gradients where the output is not empty)
    let Some(devs) = gpus("empty_tensors_match_cpu") else { return };
    use diffuse_tensor::ops::Conv2dParams;
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("empty tensors", gpu);
        let mut rng = Rng::new(161);
        let x = rng.tensor(&[0, 3, 5, 5]);
        let xg = on(&x, dev);
        r.check("add", "[0,3,5,5]", &ops::add(&xg, &xg).unwrap(), &ops::add(&x, &x).unwrap(), TOL);
        r.check("silu_forward", "[0,3,5,5]", &ops::silu_forward(&xg).unwrap(), &ops::silu_forward(&x).unwrap(), TOL);
        r.check(
            "upsample_nearest2x_forward",
            "[0,3,5,5]",
            &ops::upsample_nearest2x_forward(&xg).unwrap(),
            &ops::upsample_nearest2x_forward(&x).unwrap(),
            TOL,
        );
        let flat = rng.tensor(&[2, 3, 0, 4]);
        r.check(
            "channel_bias_backward",
            "[2,3,0,4]",
            &ops::channel_bias_backward(&on(&flat, dev)).unwrap(),
            &ops::channel_bias_backward(&flat).unwrap(),
            TOL,
        );
        let w = rng.tensor(&[4, 3, 3, 3]);
        let wg = on(&w, dev);
        let p = Conv2dParams::same(3);
        r.check(
            "conv2d_forward",
            "N0",
            &ops::conv2d_forward(&xg, &wg, None, &p).unwrap(),
            &ops::conv2d_forward(&x, &w, None, &p).unwrap(),
            TOL,
        );
        let dy = rng.tensor(&[0, 4, 5, 5]);
        let dyg = on(&dy, dev);
        r.check(
            "conv2d_backward_weight",
            "N0 (zeros)",
            &ops::conv2d_backward_weight(&dyg, &xg, w.shape(), &p).unwrap(),
            &ops::conv2d_backward_weight(&dy, &x, w.shape(), &p).unwrap(),
            TOL,
        );
        r.check(
            "conv2d_backward_bias",
            "N0 (zeros)",
            &ops::conv2d_backward_bias(&dyg).unwrap(),
            &ops::conv2d_backward_bias(&dy).unwrap(),
            TOL,
        );
        let (lx, lw) = (rng.tensor(&[0, 5]), rng.tensor(&[3, 5]));
        let ldy = rng.tensor(&[0, 3]);
        let g = ops::linear_backward(&ldy, &lx, &lw).unwrap();
        let gg = ops::linear_backward(&on(&ldy, dev), &on(&lx, dev), &on(&lw, dev)).unwrap();
        r.check("linear_backward dw", "N0 (zeros)", &gg.dw, &g.dw, TOL);
        r.check("linear_backward db", "N0 (zeros)", &gg.db, &g.db, TOL);
        let (gm, bt) = (rng.tensor(&[4]), rng.tensor(&[4]));
        let xn = rng.tensor(&[0, 4, 3, 3]);
        let f = ops::group_norm_forward(&xn, &gm, &bt, 2, 1e-6, true).unwrap();
        let fg = ops::group_norm_forward(&on(&xn, dev), &on(&gm, dev), &on(&bt, dev), 2, 1e-6, true).unwrap();
        r.check("group_norm_forward y", "N0", &fg.y, &f.y, TOL);
        let b = ops::group_norm_backward(&xn, &xn, &gm, &bt, &f.mean, &f.rstd, 2, true).unwrap();
        let xng = on(&xn, dev);
        let bg =
            ops::group_norm_backward(&xng, &xng, &on(&gm, dev), &on(&bt, dev), &fg.mean, &fg.rstd, 2, true).unwrap();
        r.check("group_norm_backward dgamma", "N0 (zeros)", &bg.dgamma, &b.dgamma, TOL);
        let q = rng.tensor(&[0, 4, 7]);
        let qg = on(&q, dev);
        let a = ops::attention_forward(&q, &q, &q).unwrap();
        r.check("attention_forward out", "B0", &ops::attention_forward(&qg, &qg, &qg).unwrap().out, &a.out, TOL);
        let t = Tensor::from_vec(Vec::<f32>::new(), [0]).unwrap();
        r.check(
            "timestep_embedding",
            "N0",
            &ops::timestep_embedding(&on(&t, dev), 8).unwrap(),
            &ops::timestep_embedding(&t, 8).unwrap(),
            TOL,
        );
        let o = ops::noise_add(&x, &t, &t, 1, 2, 3).unwrap();
        let tg = on(&t, dev);
        r.check("noise_add x_t", "N0", &ops::noise_add(&xg, &tg, &tg, 1, 2, 3).unwrap().x_t, &o.x_t, TOL);
        r.check(
            "dropout_forward",
            "N0",
            &ops::dropout_forward(&xg, 0.5, 1, 2, 3).unwrap(),
            &ops::dropout_forward(&x, 0.5, 1, 2, 3).unwrap(),
            TOL,
        );
        let mut acc = xg.clone();
        ops::add_in_place(&mut acc, &xg).unwrap();
        ops::scale_in_place(&mut acc, 2.0).unwrap();
        assert_eq!(ops::global_l2_norm(&[&xg, &acc]).unwrap(), 0.0);
    }
}
