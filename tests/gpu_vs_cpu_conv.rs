//! 2-D convolution on the GPU (real CUDA and/or the emulator) against the CPU
//! reference: forward with and without bias, and the three backward products,
//! for the U-Net's three kinds (3x3 stride 1, 3x3 stride 2 'down2', 1x1) at
//! awkward sizes (batch 1 and 3, channels 3/7/13 and one past a 64-channel
//! tile, odd and even H, W; the weight gradient with one split and many).

mod common;

use common::{gpus, on, Report, Rng};
use diffuse_tensor::ops::{self, Conv2dParams};
use diffuse_tensor::Shape;

const TOL: f64 = 1e-5;

struct Case {
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    k: usize,
    p: Conv2dParams,
    kind: &'static str,
}

fn cases() -> Vec<Case> {
    let s3 = Conv2dParams::same(3);
    let s1 = Conv2dParams::same(1);
    let d2 = Conv2dParams::down2();
    let c = |n, ci, co, h, w, k, p, kind| Case { n, ci, co, h, w, k, p, kind };
    vec![
        c(1, 3, 7, 9, 7, 3, s3, "3x3 s1"),
        c(3, 7, 13, 5, 9, 3, s3, "3x3 s1"),
        c(3, 13, 3, 7, 7, 3, s3, "3x3 s1"),
        c(1, 3, 67, 5, 3, 3, s3, "3x3 s1, two channel tiles"),
        c(1, 7, 13, 8, 10, 3, d2, "3x3 s2 down2"),
        c(3, 13, 7, 9, 7, 3, d2, "3x3 s2 down2, odd"),
        c(1, 3, 3, 7, 7, 3, d2, "3x3 s2 down2, single split"),
        c(3, 7, 13, 9, 7, 1, s1, "1x1"),
        c(1, 13, 3, 5, 5, 1, s1, "1x1"),
        c(3, 70, 7, 3, 5, 1, s1, "1x1, 70 input channels"),
        // the MNIST model's sizes (weight gradient in 49 to 196 splits)
        c(2, 32, 32, 28, 28, 3, s3, "3x3 s1, MNIST level 0"),
        c(2, 32, 32, 28, 28, 3, d2, "3x3 s2 down2, MNIST"),
        c(2, 32, 64, 14, 14, 1, s1, "1x1, MNIST skip projection"),
    ]
}

#[test]
fn conv2d_forward_and_backward_match_cpu() {
    let Some(devs) = gpus("conv2d_forward_and_backward_match_cpu") else { return };
    for gpu in &devs {
        let dev = &gpu.device;
        let mut r = Report::new("conv", gpu);
        let mut rng = Rng::new(11);
        for c in cases() {
            let name = format!("{} N{} Ci{} Co{} {}x{}", c.kind, c.n, c.ci, c.co, c.h, c.w);
            let x = rng.tensor(&[c.n, c.ci, c.h, c.w]);
            let w = rng.tensor(&[c.co, c.ci, c.k, c.k]);
            let b = rng.tensor(&[c.co]);
            let (xg, wg, bg) = (on(&x, dev), on(&w, dev), on(&b, dev));

            let y = ops::conv2d_forward(&x, &w, Some(&b), &c.p).unwrap();
            let yg = ops::conv2d_forward(&xg, &wg, Some(&bg), &c.p).unwrap();
            r.check("conv2d_forward (bias)", &name, &yg, &y, TOL);
            let y0 = ops::conv2d_forward(&x, &w, None, &c.p).unwrap();
            let y0g = ops::conv2d_forward(&xg, &wg, None, &c.p).unwrap();
            r.check("conv2d_forward (no bias)", &name, &y0g, &y0, TOL);

            let dy = rng.tensor(y.dims());
            let dyg = on(&dy, dev);
            let xs: Shape = x.shape().clone();
            let dx = ops::conv2d_backward_data(&dy, &w, &xs, &c.p).unwrap();
            let dxg = ops::conv2d_backward_data(&dyg, &wg, &xs, &c.p).unwrap();
            r.check("conv2d_backward_data", &name, &dxg, &dx, TOL);
            let dw = ops::conv2d_backward_weight(&dy, &x, w.shape(), &c.p).unwrap();
            let dwg = ops::conv2d_backward_weight(&dyg, &xg, w.shape(), &c.p).unwrap();
            r.check("conv2d_backward_weight", &name, &dwg, &dw, TOL);
            let db = ops::conv2d_backward_bias(&dy).unwrap();
            let dbg = ops::conv2d_backward_bias(&dyg).unwrap();
            r.check("conv2d_backward_bias", &name, &dbg, &db, TOL);
        }
    }
}

#[test]
fn conv2d_checks_shapes_and_devices_before_dispatch() {
    let Some(devs) = gpus("conv2d_checks_shapes_and_devices_before_dispatch") else { return };
    let mut rng = Rng::new(12);
    for gpu in &devs {
        let dev = &gpu.device;
        let x = on(&rng.tensor(&[1, 3, 5, 5]), dev);
        let w_bad = on(&rng.tensor(&[4, 2, 3, 3]), dev);
        let p = Conv2dParams::same(3);
        assert!(ops::conv2d_forward(&x, &w_bad, None, &p).is_err(), "channel mismatch on {}", gpu.label);
        let w_cpu = rng.tensor(&[4, 3, 3, 3]);
        let e = ops::conv2d_forward(&x, &w_cpu, None, &p).unwrap_err().to_string();
        assert!(e.contains("different devices"), "mixed devices on {}: {e}", gpu.label);
    }
}
