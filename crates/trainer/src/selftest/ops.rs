//! Every op family on the device under test against the CPU reference, at
//! the sizes and bounds of its `per_device!` test in
//! `crates/tensor/tests/<family>.rs` (keep the two in step).

use super::rng::TensorRng;
use super::{Checker, Options};
use crate::Result;
use diffuse_tensor::ops::{self, AdamWParams, Conv2dParams};
use diffuse_tensor::{DType, Device, Tensor};

/// Relative error of a device against the CPU reference (whole tensor), as
/// the tests' DEVICE_TOL.
const TOL: f64 = 1e-5;

/// Lengths: tiny, odd, and one past the 8192-block grid cap (2,097,152
/// threads) so the grid-stride loops wrap (not in quick mode).
fn lengths(o: &Options) -> Vec<usize> {
    let mut v = vec![1, 7, 1003];
    if !o.quick {
        v.push(8192 * 256 + 13);
    }
    v
}

/// Batch shapes of the Philox-driven ops: counts that are not multiples of
/// a Philox block, one element, several 4096-element chunks.
fn philox_shapes() -> Vec<Vec<usize>> {
    vec![vec![1, 1, 1, 1], vec![3, 1, 5, 7], vec![1, 3, 7, 9], vec![3, 13, 11, 13], vec![2, 4099]]
}

pub fn elementwise(c: &mut Checker, o: &Options) -> Result<()> {
    let mut rng = TensorRng::new(51);
    for len in lengths(o) {
        let case = format!("len {len}");
        let shape: Vec<usize> = if len == 1003 { vec![17, 59] } else { vec![len] };
        let (a, b) = (rng.tensor(&shape)?, rng.tensor(&shape)?);
        let (ag, bg) = (c.on(&a)?, c.on(&b)?);
        c.check("add", &case, &ops::add(&ag, &bg)?, &ops::add(&a, &b)?, TOL)?;
        c.check("sub", &case, &ops::sub(&ag, &bg)?, &ops::sub(&a, &b)?, TOL)?;
        c.check("mul", &case, &ops::mul(&ag, &bg)?, &ops::mul(&a, &b)?, TOL)?;
        let s = -0.3712345678901;
        c.check("add_scaled", &case, &ops::add_scaled(&ag, &bg, s)?, &ops::add_scaled(&a, &b, s)?, TOL)?;
        c.check("scale", &case, &ops::scale(&ag, s)?, &ops::scale(&a, s)?, TOL)?;
        let (mut acc, mut accg) = (a.clone(), ag.clone());
        ops::add_in_place(&mut acc, &b)?;
        ops::add_in_place(&mut accg, &bg)?;
        c.check("add_in_place", &case, &accg, &acc, TOL)?;
        ops::scale_in_place(&mut acc, 1.7)?;
        ops::scale_in_place(&mut accg, 1.7)?;
        c.check("scale_in_place", &case, &accg, &acc, TOL)?;
        // `ag` shared its buffer with `accg` before the writes
        c.check("in-place leaves clones alone", &case, &ag, &a, 1e-30)?;
    }
    // x += x through a clone sharing the buffer
    let a = TensorRng::new(52).tensor(&[3, 5])?;
    let (mut acc, mut accg) = (a.clone(), c.on(&a)?);
    let alias = accg.clone();
    ops::add_in_place(&mut accg, &alias)?;
    ops::add_in_place(&mut acc, &a)?;
    c.check("add_in_place (aliased)", "x += x, [3, 5]", &accg, &acc, TOL)?;
    c.check("add_in_place (aliased)", "the alias is unchanged", &alias, &a, 1e-30)
}

pub fn silu(c: &mut Checker, o: &Options) -> Result<()> {
    let mut rng = TensorRng::new(61);
    for len in lengths(o) {
        let case = format!("len {len}");
        let (x, dy) = (rng.tensor_in(&[len], -8.0, 8.0)?, rng.tensor(&[len])?);
        let (xg, dyg) = (c.on(&x)?, c.on(&dy)?);
        c.check("silu_forward", &case, &ops::silu_forward(&xg)?, &ops::silu_forward(&x)?, TOL)?;
        c.check("silu_backward", &case, &ops::silu_backward(&dyg, &xg)?, &ops::silu_backward(&dy, &x)?, TOL)?;
    }
    Ok(())
}

pub fn linear(c: &mut Checker, _: &Options) -> Result<()> {
    // (N, In, Out): rows and features across the 64-wide tiles
    let cases = [(1, 3, 7), (3, 13, 7), (3, 7, 13), (1, 67, 65), (70, 13, 3), (3, 128, 64)];
    let mut rng = TensorRng::new(41);
    for (n, d_in, d_out) in cases {
        let case = format!("N{n} In{d_in} Out{d_out}");
        let (x, w, b) = (rng.tensor(&[n, d_in])?, rng.tensor(&[d_out, d_in])?, rng.tensor(&[d_out])?);
        let (xg, wg, bg) = (c.on(&x)?, c.on(&w)?, c.on(&b)?);
        let y = ops::linear_forward(&x, &w, Some(&b))?;
        c.check("linear_forward (bias)", &case, &ops::linear_forward(&xg, &wg, Some(&bg))?, &y, TOL)?;
        let y0 = ops::linear_forward(&x, &w, None)?;
        c.check("linear_forward (no bias)", &case, &ops::linear_forward(&xg, &wg, None)?, &y0, TOL)?;
        let dy = rng.tensor(&[n, d_out])?;
        let g = ops::linear_backward(&dy, &x, &w)?;
        let gg = ops::linear_backward(&c.on(&dy)?, &xg, &wg)?;
        c.check("linear_backward dx", &case, &gg.dx, &g.dx, TOL)?;
        c.check("linear_backward dw", &case, &gg.dw, &g.dw, TOL)?;
        c.check("linear_backward db", &case, &gg.db, &g.db, TOL)?;
    }
    Ok(())
}

pub fn conv2d(c: &mut Checker, o: &Options) -> Result<()> {
    let (s3, s1, d2) = (Conv2dParams::same(3), Conv2dParams::same(1), Conv2dParams::down2());
    // (N, Ci, Co, H, W, K, params, kind): the U-Net's three kinds at awkward
    // sizes, then the MNIST model's (weight gradient in 49 to 196 splits)
    let mut cases = vec![
        (1, 3, 7, 9, 7, 3, s3, "3x3 s1"),
        (3, 7, 13, 5, 9, 3, s3, "3x3 s1"),
        (3, 13, 3, 7, 7, 3, s3, "3x3 s1"),
        (1, 3, 67, 5, 3, 3, s3, "3x3 s1, two channel tiles"),
        (1, 7, 13, 8, 10, 3, d2, "3x3 s2 down2"),
        (3, 13, 7, 9, 7, 3, d2, "3x3 s2 down2, odd"),
        (1, 3, 3, 7, 7, 3, d2, "3x3 s2 down2, single split"),
        (3, 7, 13, 9, 7, 1, s1, "1x1"),
        (1, 13, 3, 5, 5, 1, s1, "1x1"),
        (3, 70, 7, 3, 5, 1, s1, "1x1, 70 input channels"),
    ];
    if !o.quick {
        cases.extend([
            (2, 32, 32, 28, 28, 3, s3, "3x3 s1, MNIST level 0"),
            (2, 32, 32, 28, 28, 3, d2, "3x3 s2 down2, MNIST"),
            (2, 32, 64, 14, 14, 1, s1, "1x1, MNIST skip projection"),
        ]);
    }
    let mut rng = TensorRng::new(11);
    for (n, ci, co, h, w_, k, p, kind) in cases {
        let case = format!("{kind} N{n} Ci{ci} Co{co} {h}x{w_}");
        let x = rng.tensor(&[n, ci, h, w_])?;
        let w = rng.tensor(&[co, ci, k, k])?;
        let b = rng.tensor(&[co])?;
        let (xg, wg, bg) = (c.on(&x)?, c.on(&w)?, c.on(&b)?);
        let y = ops::conv2d_forward(&x, &w, Some(&b), &p)?;
        c.check("conv2d_forward (bias)", &case, &ops::conv2d_forward(&xg, &wg, Some(&bg), &p)?, &y, TOL)?;
        let y0 = ops::conv2d_forward(&x, &w, None, &p)?;
        c.check("conv2d_forward (no bias)", &case, &ops::conv2d_forward(&xg, &wg, None, &p)?, &y0, TOL)?;
        let dy = rng.tensor(y.dims())?;
        let dyg = c.on(&dy)?;
        let dx = ops::conv2d_backward_data(&dy, &w, x.shape(), &p)?;
        c.check("conv2d_backward_data", &case, &ops::conv2d_backward_data(&dyg, &wg, x.shape(), &p)?, &dx, TOL)?;
        let dw = ops::conv2d_backward_weight(&dy, &x, w.shape(), &p)?;
        let dwg = ops::conv2d_backward_weight(&dyg, &xg, w.shape(), &p)?;
        c.check("conv2d_backward_weight", &case, &dwg, &dw, TOL)?;
        let db = ops::conv2d_backward_bias(&dy)?;
        c.check("conv2d_backward_bias", &case, &ops::conv2d_backward_bias(&dyg)?, &db, TOL)?;
    }
    Ok(())
}

pub fn group_norm(c: &mut Checker, o: &Options) -> Result<()> {
    // (shape, groups): channels 3/7/13/12/32, odd H*W, an [N, C] input, and
    // slabs longer than a 256-thread block
    let mut cases: Vec<(Vec<usize>, usize)> = vec![
        (vec![1, 3, 5, 3], 1),
        (vec![3, 7, 3, 5], 7),
        (vec![3, 13, 3, 3], 1),
        (vec![1, 12, 7, 5], 4),
        (vec![3, 32, 7, 7], 8),
        (vec![2, 8, 17, 19], 2),
        (vec![3, 12], 4),
        (vec![1, 7], 1),
    ];
    if !o.quick {
        cases.push((vec![2, 32, 28, 28], 8));
    }
    let mut rng = TensorRng::new(21);
    for (shape, groups) in cases {
        for fuse in [false, true] {
            let case = format!("{shape:?} G{groups} silu={fuse}");
            let ch = shape[1];
            let x = rng.tensor_in(&shape, -1.5, 2.5)?;
            let gamma = rng.tensor_in(&[ch], 0.5, 1.5)?;
            let beta = rng.tensor_in(&[ch], -0.5, 0.5)?;
            let (xg, gg, bg) = (c.on(&x)?, c.on(&gamma)?, c.on(&beta)?);
            let f = ops::group_norm_forward(&x, &gamma, &beta, groups, 1e-6, fuse)?;
            let fg = ops::group_norm_forward(&xg, &gg, &bg, groups, 1e-6, fuse)?;
            c.check("group_norm_forward y", &case, &fg.y, &f.y, TOL)?;
            c.check("group_norm_forward mean", &case, &fg.mean, &f.mean, TOL)?;
            c.check("group_norm_forward rstd", &case, &fg.rstd, &f.rstd, TOL)?;
            let dy = rng.tensor(&shape)?;
            let dyg = c.on(&dy)?;
            let b = ops::group_norm_backward(&dy, &x, &gamma, &beta, &f.mean, &f.rstd, groups, fuse)?;
            let bg2 = ops::group_norm_backward(&dyg, &xg, &gg, &bg, &fg.mean, &fg.rstd, groups, fuse)?;
            c.check("group_norm_backward dx", &case, &bg2.dx, &b.dx, TOL)?;
            c.check("group_norm_backward dgamma", &case, &bg2.dgamma, &b.dgamma, TOL)?;
            c.check("group_norm_backward dbeta", &case, &bg2.dbeta, &b.dbeta, TOL)?;
        }
    }
    Ok(())
}

pub fn attention(c: &mut Checker, o: &Options) -> Result<()> {
    // (B, C, N): one token, partial and several key tiles, and C = 256 /
    // 512 where the tiles shrink to fit shared memory
    let mut cases = vec![(1, 3, 1), (3, 7, 1), (1, 13, 7), (3, 7, 7), (1, 7, 49), (3, 13, 49), (1, 64, 49), (2, 3, 70)];
    if !o.quick {
        cases.extend([(1, 256, 70), (2, 512, 21)]);
    }
    let mut rng = TensorRng::new(31);
    for (b, ch, n) in cases {
        let case = format!("B{b} C{ch} N{n}");
        let shape = [b, ch, n];
        let (q, k, v) = (rng.tensor_in(&shape, -2.0, 2.0)?, rng.tensor_in(&shape, -2.0, 2.0)?, rng.tensor(&shape)?);
        let (qg, kg, vg) = (c.on(&q)?, c.on(&k)?, c.on(&v)?);
        let f = ops::attention_forward(&q, &k, &v)?;
        let fg = ops::attention_forward(&qg, &kg, &vg)?;
        c.check("attention_forward out", &case, &fg.out, &f.out, TOL)?;
        c.check("attention_forward lse", &case, &fg.lse, &f.lse, TOL)?;
        let p = ops::attention_weights(&q, &k)?;
        c.check("attention_weights", &case, &ops::attention_weights(&qg, &kg)?, &p, TOL)?;
        let dout = rng.tensor(&shape)?;
        let g = ops::attention_backward(&dout, &q, &k, &v, &f.out, &f.lse)?;
        let gg = ops::attention_backward(&c.on(&dout)?, &qg, &kg, &vg, &fg.out, &fg.lse)?;
        c.check("attention_backward dv", &case, &gg.dv, &g.dv, TOL)?;
        // one token: dq and dk are analytically zero, measured against dv
        let floor = if n == 1 { super::norm_f32(&g.dv.to_vec_f32()?) } else { 0.0 };
        c.check_floor("attention_backward dq", &case, &gg.dq, &g.dq, TOL, floor)?;
        c.check_floor("attention_backward dk", &case, &gg.dk, &g.dk, TOL, floor)?;
    }
    Ok(())
}

pub fn layout(c: &mut Checker, _: &Options) -> Result<()> {
    let shapes = [[1, 3, 1, 1], [3, 7, 5, 3], [1, 13, 7, 9], [3, 3, 9, 11], [2, 9, 1, 40]];
    let mut rng = TensorRng::new(71);
    for [n, ch, h, w] in shapes {
        let case = format!("[{n}, {ch}, {h}, {w}]");
        let x = rng.tensor(&[n, ch, h, w])?;
        let xg = c.on(&x)?;
        let up = ops::upsample_nearest2x_forward(&x)?;
        c.check("upsample_nearest2x_forward", &case, &ops::upsample_nearest2x_forward(&xg)?, &up, TOL)?;
        let dy = rng.tensor(&[n, ch, 2 * h, 2 * w])?;
        let dx = ops::upsample_nearest2x_backward(&dy)?;
        c.check("upsample_nearest2x_backward", &case, &ops::upsample_nearest2x_backward(&c.on(&dy)?)?, &dx, TOL)?;
        let cb = 7;
        let b = rng.tensor(&[n, cb, h, w])?;
        let cat = ops::concat_channels(&x, &b)?;
        let catg = ops::concat_channels(&xg, &c.on(&b)?)?;
        c.check("concat_channels", &case, &catg, &cat, TOL)?;
        for ca in [0, ch, ch + 3] {
            let (s1, s2) = ops::split_channels(&cat, ca)?;
            let (g1, g2) = ops::split_channels(&catg, ca)?;
            let sc = format!("{case} + {cb} split at {ca}");
            c.check("split_channels", &sc, &g1, &s1, TOL)?;
            c.check("split_channels", &sc, &g2, &s2, TOL)?;
        }
        let bias = rng.tensor(&[n, ch])?;
        let want = ops::add_channel_bias(&x, &bias)?;
        c.check("add_channel_bias", &case, &ops::add_channel_bias(&xg, &c.on(&bias)?)?, &want, TOL)?;
        let want = ops::channel_bias_backward(&x)?;
        c.check("channel_bias_backward", &case, &ops::channel_bias_backward(&xg)?, &want, TOL)?;
    }
    Ok(())
}

pub fn embedding(c: &mut Checker, _: &Options) -> Result<()> {
    let mut rng = TensorRng::new(81);
    for n in [1, 3, 64] {
        // integer timesteps as the trainer draws them, up to T = 1000
        let t: Vec<f32> = (0..n).map(|_| (rng.next_u64() % 1000) as f32).collect();
        let t = Tensor::from_vec(t, [n])?;
        let tg = c.on(&t)?;
        for dim in [2, 3, 7, 16, 33, 128] {
            let case = format!("N{n} dim {dim}");
            let want = ops::timestep_embedding(&t, dim)?;
            c.check("timestep_embedding", &case, &ops::timestep_embedding(&tg, dim)?, &want, TOL)?;
        }
    }
    // The class embedding: a gather and a fixed-order row sum, so bit-identical.
    let mut rng = TensorRng::new(82);
    for (n, rows, dim) in [(1, 1, 1), (7, 11, 33), (64, 11, 128), (130, 3, 257)] {
        let labels: Vec<usize> = (0..n).map(|_| (rng.next_u64() % rows as u64) as usize).collect();
        let table = rng.tensor(&[rows, dim])?;
        let dout = rng.tensor(&[n, dim])?;
        let case = format!("N{n} rows {rows} dim {dim}");
        let want = ops::class_embedding(&table, &labels)?;
        c.check_exact("class_embedding", &case, &ops::class_embedding(&c.on(&table)?, &labels)?, &want)?;
        let want = ops::class_embedding_backward(&dout, &labels, rows)?;
        let got = ops::class_embedding_backward(&c.on(&dout)?, &labels, rows)?;
        c.check_exact("class_embedding_backward", &case, &got, &want)?;
    }
    Ok(())
}

pub fn dropout(c: &mut Checker, _: &Options) -> Result<()> {
    let mut rng = TensorRng::new(121);
    for shape in philox_shapes() {
        let x = rng.tensor(&shape)?;
        let xg = c.on(&x)?;
        for (p, seed, step, stream) in [(0.0f32, 1u64, 0u32, 0u32), (0.1, 7, 3, 2), (0.5, u64::MAX, 9, 11)] {
            let case = format!("{shape:?} p {p} seed {seed} step {step} stream {stream}");
            let y = ops::dropout_forward(&x, p, seed, step, stream)?;
            c.check_exact("dropout_forward", &case, &ops::dropout_forward(&xg, p, seed, step, stream)?, &y)?;
            let dx = ops::dropout_backward(&x, p, seed, step, stream)?;
            c.check_exact("dropout_backward", &case, &ops::dropout_backward(&xg, p, seed, step, stream)?, &dx)?;
        }
    }
    Ok(())
}

pub fn noise(c: &mut Checker, _: &Options) -> Result<()> {
    let mut rng = TensorRng::new(101);
    for shape in philox_shapes() {
        let n = shape[0];
        let x0 = rng.tensor(&shape)?;
        let a = rng.tensor_in(&[n], 0.05, 1.0)?;
        let b: Vec<f32> = a.to_vec_f32()?.iter().map(|&a| (1.0 - a * a).sqrt()).collect();
        let b = Tensor::from_vec(b, [n])?;
        let (x0g, ag, bg) = (c.on(&x0)?, c.on(&a)?, c.on(&b)?);
        for (seed, step, stream) in [(0u64, 0u32, 0u32), (42, 7, 3), (u64::MAX - 5, u32::MAX, 1 << 31)] {
            let case = format!("{shape:?} seed {seed} step {step} stream {stream}");
            let o = ops::noise_add(&x0, &a, &b, seed, step, stream)?;
            let og = ops::noise_add(&x0g, &ag, &bg, seed, step, stream)?;
            c.check("noise_add eps", &case, &og.eps, &o.eps, 1e-6)?;
            c.check("noise_add x_t", &case, &og.x_t, &o.x_t, TOL)?;
        }
        let dxt = rng.tensor(&shape)?;
        let want = ops::noise_add_backward(&dxt, &a)?;
        c.check("noise_add_backward", &format!("{shape:?}"), &ops::noise_add_backward(&c.on(&dxt)?, &ag)?, &want, TOL)?;
    }
    Ok(())
}

pub fn loss(c: &mut Checker, o: &Options) -> Result<()> {
    let mut rng = TensorRng::new(111);
    let mut shapes = philox_shapes();
    if !o.quick {
        shapes.push(vec![3, 1, 2, 8192 * 20 + 1]); // 241 chunks: one per thread of the final block
        shapes.push(vec![1, 4096 * 300 + 7]); // 301 chunks: the final block's threads take two each
    }
    for shape in shapes {
        let case = format!("{shape:?}");
        let (p, t) = (rng.tensor(&shape)?, rng.tensor(&shape)?);
        let (pg, tg) = (c.on(&p)?, c.on(&t)?);
        c.check("mse_loss_forward", &case, &ops::mse_loss_forward(&pg, &tg)?, &ops::mse_loss_forward(&p, &t)?, TOL)?;
        for dloss in [1.0, 0.37] {
            let want = ops::mse_loss_backward(&p, &t, dloss)?;
            let got = ops::mse_loss_backward(&pg, &tg, dloss)?;
            c.check("mse_loss_backward", &format!("{case} dloss {dloss}"), &got, &want, TOL)?;
        }
    }
    Ok(())
}

pub fn optim(c: &mut Checker, _: &Options) -> Result<()> {
    let h = AdamWParams { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    let mut rng = TensorRng::new(131);
    for shape in [vec![1], vec![7, 13], vec![3, 13, 3, 3], vec![70001]] {
        let case = format!("{shape:?}");
        let mut p = rng.tensor(&shape)?;
        let mut m = Tensor::zeros(shape.clone(), DType::F32, &Device::Cpu)?;
        let mut v = m.clone();
        let (mut pg, mut mg, mut vg) = (c.on(&p)?, c.on(&m)?, c.on(&v)?);
        for step in 1..=3u64 {
            let g = rng.tensor(&shape)?;
            ops::adamw_step(&mut p, &g, &mut m, &mut v, &h, step)?;
            ops::adamw_step(&mut pg, &c.on(&g)?, &mut mg, &mut vg, &h, step)?;
            let sc = format!("{case} step {step}");
            c.check("adamw_step param", &sc, &pg, &p, TOL)?;
            c.check("adamw_step m", &sc, &mg, &m, TOL)?;
            c.check("adamw_step v", &sc, &vg, &v, TOL)?;
        }
        let mut e = rng.tensor(&shape)?;
        let mut eg = c.on(&e)?;
        for decay in [0.999, 0.5, 0.0, 1.0] {
            ops::ema_update(&mut e, &p, decay)?;
            ops::ema_update(&mut eg, &pg, decay)?;
            c.check("ema_update", &format!("{case} decay {decay}"), &eg, &e, TOL)?;
        }
    }
    // global L2 norm: empty tensors in the middle and at the end, one
    // element, several 4096-element chunks
    let mut rng = TensorRng::new(141);
    let lens = [7, 0, 1, 4096, 4097, 3 * 4096 + 5, 13, 0];
    let ts = lens.iter().map(|&n| rng.tensor(&[n])).collect::<Result<Vec<_>>>()?;
    let tg = ts.iter().map(|t| c.on(t)).collect::<Result<Vec<_>>>()?;
    let want = ops::global_l2_norm(&ts.iter().collect::<Vec<_>>())?;
    let got = ops::global_l2_norm(&tg.iter().collect::<Vec<_>>())?;
    c.check_scalar("global_l2_norm", "8 tensors", got, want, 1e-12);
    for (i, (t, g)) in ts.iter().zip(&tg).enumerate() {
        let (got, want) = (ops::global_l2_norm(&[g])?, ops::global_l2_norm(&[t])?);
        c.check_scalar("global_l2_norm", &format!("one tensor of {}", lens[i]), got, want, 1e-12);
    }
    Ok(())
}

pub fn sampling(c: &mut Checker, _: &Options) -> Result<()> {
    let mut rng = TensorRng::new(91);
    for shape in [vec![1, 1, 3, 3], vec![3, 7, 5, 3], vec![3], vec![2, 4099]] {
        let case = format!("{shape:?}");
        let x = rng.tensor_in(&shape, -3.0, 3.0)?;
        let s = rng.tensor(&[shape[0]])?;
        let xg = c.on(&x)?;
        let want = ops::scale_per_sample(&x, &s)?;
        c.check("scale_per_sample", &case, &ops::scale_per_sample(&xg, &c.on(&s)?)?, &want, TOL)?;
        c.check("clamp", &case, &ops::clamp(&xg, -1.0, 1.0)?, &ops::clamp(&x, -1.0, 1.0)?, TOL)?;
    }
    // NaN passes through clamp on both
    let x = Tensor::from_vec(vec![f32::NAN, -5.0, 0.25, 5.0, f32::NAN], [5])?;
    c.check("clamp", "NaN", &ops::clamp(&c.on(&x)?, -1.0, 1.0)?, &ops::clamp(&x, -1.0, 1.0)?, TOL)
}

/// Batch 0 and empty planes through every family's launch path (as
/// tests/empty_tensors_per_device.rs): each must skip or size its grid
/// correctly (a real GPU rejects an empty grid) and give the CPU's result.
pub fn empty_tensors(c: &mut Checker, _: &Options) -> Result<()> {
    let mut rng = TensorRng::new(161);
    let x = rng.tensor(&[0, 3, 5, 5])?;
    let xg = c.on(&x)?;
    c.check("add", "[0,3,5,5]", &ops::add(&xg, &xg)?, &ops::add(&x, &x)?, TOL)?;
    c.check("silu_forward", "[0,3,5,5]", &ops::silu_forward(&xg)?, &ops::silu_forward(&x)?, TOL)?;
    let up = ops::upsample_nearest2x_forward(&x)?;
    c.check("upsample_nearest2x_forward", "[0,3,5,5]", &ops::upsample_nearest2x_forward(&xg)?, &up, TOL)?;
    let flat = rng.tensor(&[2, 3, 0, 4])?;
    let want = ops::channel_bias_backward(&flat)?;
    c.check("channel_bias_backward", "[2,3,0,4]", &ops::channel_bias_backward(&c.on(&flat)?)?, &want, TOL)?;
    let w = rng.tensor(&[4, 3, 3, 3])?;
    let wg = c.on(&w)?;
    let p = Conv2dParams::same(3);
    let y = ops::conv2d_forward(&x, &w, None, &p)?;
    c.check("conv2d_forward", "N0", &ops::conv2d_forward(&xg, &wg, None, &p)?, &y, TOL)?;
    let dy = rng.tensor(&[0, 4, 5, 5])?;
    let dyg = c.on(&dy)?;
    let dw = ops::conv2d_backward_weight(&dy, &x, w.shape(), &p)?;
    c.check("conv2d_backward_weight", "N0 (zeros)", &ops::conv2d_backward_weight(&dyg, &xg, w.shape(), &p)?, &dw, TOL)?;
    let db = ops::conv2d_backward_bias(&dy)?;
    c.check("conv2d_backward_bias", "N0 (zeros)", &ops::conv2d_backward_bias(&dyg)?, &db, TOL)?;
    let (lx, lw, ldy) = (rng.tensor(&[0, 5])?, rng.tensor(&[3, 5])?, rng.tensor(&[0, 3])?);
    let g = ops::linear_backward(&ldy, &lx, &lw)?;
    let gg = ops::linear_backward(&c.on(&ldy)?, &c.on(&lx)?, &c.on(&lw)?)?;
    c.check("linear_backward dw", "N0 (zeros)", &gg.dw, &g.dw, TOL)?;
    c.check("linear_backward db", "N0 (zeros)", &gg.db, &g.db, TOL)?;
    let (gm, bt, xn) = (rng.tensor(&[4])?, rng.tensor(&[4])?, rng.tensor(&[0, 4, 3, 3])?);
    let (gmg, btg, xng) = (c.on(&gm)?, c.on(&bt)?, c.on(&xn)?);
    let f = ops::group_norm_forward(&xn, &gm, &bt, 2, 1e-6, true)?;
    let fg = ops::group_norm_forward(&xng, &gmg, &btg, 2, 1e-6, true)?;
    c.check("group_norm_forward y", "N0", &fg.y, &f.y, TOL)?;
    let b = ops::group_norm_backward(&xn, &xn, &gm, &bt, &f.mean, &f.rstd, 2, true)?;
    let bg = ops::group_norm_backward(&xng, &xng, &gmg, &btg, &fg.mean, &fg.rstd, 2, true)?;
    c.check("group_norm_backward dgamma", "N0 (zeros)", &bg.dgamma, &b.dgamma, TOL)?;
    let q = rng.tensor(&[0, 4, 7])?;
    let qg = c.on(&q)?;
    let a = ops::attention_forward(&q, &q, &q)?;
    c.check("attention_forward out", "B0", &ops::attention_forward(&qg, &qg, &qg)?.out, &a.out, TOL)?;
    let t = Tensor::from_vec(Vec::<f32>::new(), [0])?;
    let tg = c.on(&t)?;
    let e = ops::timestep_embedding(&t, 8)?;
    c.check("timestep_embedding", "N0", &ops::timestep_embedding(&tg, 8)?, &e, TOL)?;
    let o = ops::noise_add(&x, &t, &t, 1, 2, 3)?;
    c.check("noise_add x_t", "N0", &ops::noise_add(&xg, &tg, &tg, 1, 2, 3)?.x_t, &o.x_t, TOL)?;
    let d = ops::dropout_forward(&x, 0.5, 1, 2, 3)?;
    c.check("dropout_forward", "N0", &ops::dropout_forward(&xg, 0.5, 1, 2, 3)?, &d, TOL)?;
    let mut acc = xg.clone();
    ops::add_in_place(&mut acc, &xg)?;
    ops::scale_in_place(&mut acc, 2.0)?;
    c.check_scalar("global_l2_norm", "two empty tensors", ops::global_l2_norm(&[&xg, &acc])?, 0.0, 1e-300);
    Ok(())
}

/// bf16 storage (GPU only: the host has none). The cast against the CPU's
/// bf16 rounding (`Precision::round`), bit for bit; the tensor-core
/// convolution and attention given bf16-stored inputs against the same ops
/// on the f32 originals at bf16 precision, bit for bit (what a bf16 training
/// cache relies on; `tests/tensor_core.rs`, `tests/attention_tc.rs`).
pub fn bf16_storage(c: &mut Checker, o: &Options) -> Result<()> {
    use diffuse_tensor::Precision;
    // the bf16 tensor cores need sm_80 (the emulator reports no capability)
    let tensor_cores = match c.device() {
        Device::Gpu(g) => g.compute_capability().is_none_or(|(major, _)| major >= 8),
        Device::Cpu => false,
    };
    if !tensor_cores {
        return Ok(());
    }
    let mut rng = TensorRng::new(41);
    for n in lengths(o) {
        let x = rng.tensor_in(&[n], -4.0, 4.0)?;
        let want: Vec<f32> = x.to_vec_f32()?.into_iter().map(|v| Precision::Bf16.round(v)).collect();
        let got = c.on(&x)?.to_dtype(DType::BF16)?;
        c.check_exact("cast to bf16", &format!("len {n}"), &got, &Tensor::from_vec(want, [n])?)?;
    }
    let bf = Precision::Bf16;
    let (s3, s1, d2) = (Conv2dParams::same(3), Conv2dParams::same(1), Conv2dParams::down2());
    for (n, ci, co, h, w_, k, p) in [(2, 13, 35, 9, 7, 3, s3), (1, 40, 17, 8, 10, 3, d2), (3, 70, 7, 3, 5, 1, s1)] {
        let case = format!("N{n} Ci{ci} Co{co} {h}x{w_} k{k}");
        let x = c.on(&rng.tensor(&[n, ci, h, w_])?)?;
        let (w, b) = (c.on(&rng.tensor(&[co, ci, k, k])?)?, c.on(&rng.tensor(&[co])?)?);
        let xh = x.to_dtype(DType::BF16)?;
        let y = ops::conv2d_forward_with(&x, &w, Some(&b), &p, bf)?;
        let yh = ops::conv2d_forward_with(&xh, &w, Some(&b), &p, bf)?;
        c.check_exact("conv2d_forward, bf16 x", &case, &yh, &y.to_device(&Device::Cpu)?)?;
        let dy = c.on(&rng.tensor(y.dims())?)?;
        let dw = ops::conv2d_backward_weight_with(&dy, &x, w.shape(), &p, bf)?;
        let dwh = ops::conv2d_backward_weight_with(&dy, &xh, w.shape(), &p, bf)?;
        c.check_exact("conv2d_backward_weight, bf16 x", &case, &dwh, &dw.to_device(&Device::Cpu)?)?;
    }
    for (b, ch, n) in [(2, 13, 37), (1, 64, 49)] {
        let case = format!("B{b} C{ch} N{n}");
        let shape = [b, ch, n];
        let (q, k, v) = (rng.tensor_in(&shape, -2.0, 2.0)?, rng.tensor_in(&shape, -2.0, 2.0)?, rng.tensor(&shape)?);
        let (q, k, v, dout) = (c.on(&q)?, c.on(&k)?, c.on(&v)?, c.on(&rng.tensor(&shape)?)?);
        let h = |t: &Tensor| t.to_dtype(DType::BF16);
        let (qh, kh, vh) = (h(&q)?, h(&k)?, h(&v)?);
        let f = ops::attention_forward_with(&q, &k, &v, bf)?;
        let fh = ops::attention_forward_with(&qh, &kh, &vh, bf)?;
        let g = ops::attention_backward_with(&dout, &q, &k, &v, &f.out, &f.lse, bf)?;
        let gh = ops::attention_backward_with(&dout, &qh, &kh, &vh, &fh.out, &fh.lse, bf)?;
        let cpu = |t: &Tensor| t.to_device(&Device::Cpu);
        c.check_exact("attention_forward out, bf16 q/k/v", &case, &fh.out, &cpu(&f.out)?)?;
        c.check_exact("attention_backward dq, bf16 q/k/v", &case, &gh.dq, &cpu(&g.dq)?)?;
        c.check_exact("attention_backward dk, bf16 q/k/v", &case, &gh.dk, &cpu(&g.dk)?)?;
        c.check_exact("attention_backward dv, bf16 q/k/v", &case, &gh.dv, &cpu(&g.dv)?)?;
    }
    Ok(())
}
