//! Empty tensors on every device: batch 0 and empty planes through every op
//! family's launch path. Each path must skip or size its grid correctly (the
//! emulator rejects empty grids) and give the CPU's result (empty outputs,
//! zero gradients where the output is not empty). One test across the
//! families, since what it checks is the launch code's shared edge case.

mod common;

use common::*;
use diffuse_tensor::{ops, Tensor};

const DEVICE_TOL: f64 = 1e-5;

fn empty_tensors(dut: &DeviceUnderTest) {
    // batch 0 and empty planes: every launch path must skip or size its grid
    // correctly (the emulator rejects empty grids) and give the CPU's result
    // (empty outputs, zero gradients where the output is not empty)
    use diffuse_tensor::ops::Conv2dParams;
    let dev = &dut.device;
    let mut r = Report::new("empty tensors", dut);
    let mut rng = TensorRng::new(161);
    let x = rng.tensor(&[0, 3, 5, 5]);
    let xg = on(&x, dev);
    r.check("add", "[0,3,5,5]", &ops::add(&xg, &xg).unwrap(), &ops::add(&x, &x).unwrap(), DEVICE_TOL);
    r.check("silu_forward", "[0,3,5,5]", &ops::silu_forward(&xg).unwrap(), &ops::silu_forward(&x).unwrap(), DEVICE_TOL);
    r.check(
        "upsample_nearest2x_forward",
        "[0,3,5,5]",
        &ops::upsample_nearest2x_forward(&xg).unwrap(),
        &ops::upsample_nearest2x_forward(&x).unwrap(),
        DEVICE_TOL,
    );
    let flat = rng.tensor(&[2, 3, 0, 4]);
    r.check(
        "channel_bias_backward",
        "[2,3,0,4]",
        &ops::channel_bias_backward(&on(&flat, dev)).unwrap(),
        &ops::channel_bias_backward(&flat).unwrap(),
        DEVICE_TOL,
    );
    let w = rng.tensor(&[4, 3, 3, 3]);
    let wg = on(&w, dev);
    let p = Conv2dParams::same(3);
    r.check(
        "conv2d_forward",
        "N0",
        &ops::conv2d_forward(&xg, &wg, None, &p).unwrap(),
        &ops::conv2d_forward(&x, &w, None, &p).unwrap(),
        DEVICE_TOL,
    );
    let dy = rng.tensor(&[0, 4, 5, 5]);
    let dyg = on(&dy, dev);
    r.check(
        "conv2d_backward_weight",
        "N0 (zeros)",
        &ops::conv2d_backward_weight(&dyg, &xg, w.shape(), &p).unwrap(),
        &ops::conv2d_backward_weight(&dy, &x, w.shape(), &p).unwrap(),
        DEVICE_TOL,
    );
    r.check(
        "conv2d_backward_bias",
        "N0 (zeros)",
        &ops::conv2d_backward_bias(&dyg).unwrap(),
        &ops::conv2d_backward_bias(&dy).unwrap(),
        DEVICE_TOL,
    );
    let (lx, lw) = (rng.tensor(&[0, 5]), rng.tensor(&[3, 5]));
    let ldy = rng.tensor(&[0, 3]);
    let g = ops::linear_backward(&ldy, &lx, &lw).unwrap();
    let gg = ops::linear_backward(&on(&ldy, dev), &on(&lx, dev), &on(&lw, dev)).unwrap();
    r.check("linear_backward dw", "N0 (zeros)", &gg.dw, &g.dw, DEVICE_TOL);
    r.check("linear_backward db", "N0 (zeros)", &gg.db, &g.db, DEVICE_TOL);
    let (gm, bt) = (rng.tensor(&[4]), rng.tensor(&[4]));
    let xn = rng.tensor(&[0, 4, 3, 3]);
    let f = ops::group_norm_forward(&xn, &gm, &bt, 2, 1e-6, true).unwrap();
    let fg = ops::group_norm_forward(&on(&xn, dev), &on(&gm, dev), &on(&bt, dev), 2, 1e-6, true).unwrap();
    r.check("group_norm_forward y", "N0", &fg.y, &f.y, DEVICE_TOL);
    let b = ops::group_norm_backward(&xn, &xn, &gm, &bt, &f.mean, &f.rstd, 2, true).unwrap();
    let xng = on(&xn, dev);
    let bg = ops::group_norm_backward(&xng, &xng, &on(&gm, dev), &on(&bt, dev), &fg.mean, &fg.rstd, 2, true).unwrap();
    r.check("group_norm_backward dgamma", "N0 (zeros)", &bg.dgamma, &b.dgamma, DEVICE_TOL);
    let q = rng.tensor(&[0, 4, 7]);
    let qg = on(&q, dev);
    let a = ops::attention_forward(&q, &q, &q).unwrap();
    r.check("attention_forward out", "B0", &ops::attention_forward(&qg, &qg, &qg).unwrap().out, &a.out, DEVICE_TOL);
    let t = Tensor::from_vec(Vec::<f32>::new(), [0]).unwrap();
    r.check(
        "timestep_embedding",
        "N0",
        &ops::timestep_embedding(&on(&t, dev), 8).unwrap(),
        &ops::timestep_embedding(&t, 8).unwrap(),
        DEVICE_TOL,
    );
    let o = ops::noise_add(&x, &t, &t, 1, 2, 3).unwrap();
    let tg = on(&t, dev);
    r.check("noise_add x_t", "N0", &ops::noise_add(&xg, &tg, &tg, 1, 2, 3).unwrap().x_t, &o.x_t, DEVICE_TOL);
    r.check(
        "dropout_forward",
        "N0",
        &ops::dropout_forward(&xg, 0.5, 1, 2, 3).unwrap(),
        &ops::dropout_forward(&x, 0.5, 1, 2, 3).unwrap(),
        DEVICE_TOL,
    );
    let mut acc = xg.clone();
    ops::add_in_place(&mut acc, &xg).unwrap();
    ops::scale_in_place(&mut acc, 2.0).unwrap();
    assert_eq!(ops::global_l2_norm(&[&xg, &acc]).unwrap(), 0.0);
}

per_device!(empty_tensors, empty_tensors_cpu, empty_tensors_emu, empty_tensors_cuda);
