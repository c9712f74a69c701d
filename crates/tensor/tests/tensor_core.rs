//! The tensor-core convolutions (kernels/conv2d_*_tc.cu, bf16 and tf32
//! inputs, f32 accumulation) against the rounding CPU oracle
//! (`cpu::reduced`), under bounds derived here from the unit roundoffs and
//! the reduction length; and the oracle itself against plain loops written
//! here.
//!
//! ## The bounds
//!
//! Let u_in be the input rounding's unit roundoff (bf16: 2^-8, tf32: 2^-11)
//! and u = 2^-24 that of f32. Kernel and oracle round every input the same
//! way (bf16: nearest even; tf32: nearest, ties away, as cvt.rna.tf32.f32),
//! a~ = a (1 + d), |d| <= u_in, so they multiply the same values a~ b~. The
//! product of two bf16 (8-bit significands) or tf32 (11-bit) values has at
//! most 22 significant bits and is exact in f32. The kernel then adds the
//! K products (zero products for padding and taps that miss) into an f32
//! accumulator: n additions, each rounded, n = K (+1 for the bias, + the
//! number of split-K partials for the weight gradient). By the standard
//! recursive-summation bound (Higham, Accuracy and Stability, eq. 4.4),
//!
//!   |c_kernel - sum a~ b~| <= gamma_n(u') sum |a~ b~|,   gamma_n(u') = n u' / (1 - n u'),
//!
//! with u' = 2u = 2^-23 rather than u: a tensor core's adder may truncate
//! instead of rounding to nearest (the emulator rounds to nearest, within
//! u). The oracle's f64 sum adds an error below K 2^-53 sum |a~ b~|, far
//! under this. So, elementwise against the oracle's own sum |a~ b~|:
//!
//!   (1)  |c_kernel - oracle| <= gamma_n(2^-23) sum |a~ b~|          (`accumulation_bound`)
//!
//! Against the exact product of the unrounded inputs, the input rounding
//! adds |a~ b~ - a b| <= (2 u_in + u_in^2) |a b| per term:
//!
//!   (2)  |c_kernel - sum a b| <= (2 u_in + u_in^2) sum |a b| + gamma_n(2^-23) sum |a~ b~|
//!
//! Bound (1) is tight enough to fail: with bf16 or tf32 inputs it is far
//! below the input rounding error, so a kernel that skipped the rounding,
//! rounded differently or summed the wrong taps would break it (checked
//! below: the f32 oracle, which does not round, violates (1) on most
//! outputs).

mod common;
use common::*;
use diffuse_tensor::cpu::reduced::{self, accumulation_bound, Rounded};
use diffuse_tensor::geom::ConvGeom;
use diffuse_tensor::gpu::launch::conv2d::weight_grad_splits;
use diffuse_tensor::gpu::launch::conv2d_tc;
use diffuse_tensor::ops::Conv2dParams;
use diffuse_tensor::{Device, Precision, Storage, Tensor};

fn geom(n: usize, ci: usize, co: usize, h: usize, w: usize, k: usize, p: Conv2dParams) -> ConvGeom {
    let (ho, wo) = p.output_hw(h, w, k, k).unwrap();
    ConvGeom { n, ci, h, w, co, kh: k, kw: k, stride: p.stride, pad_top: p.pad_top, pad_left: p.pad_left, ho, wo }
}

/// The U-Net's convolutions at small awkward sizes: conv_in (3 -> 32), a
/// 3x3 residual conv, 1x1 skips, the stride-2 downsample (pad 0/1), conv_out
/// (32 -> 3), and channel / pixel counts that are not multiples of 16.
fn cases() -> Vec<ConvGeom> {
    let (s3, s1, d2) = (Conv2dParams::same(3), Conv2dParams::same(1), Conv2dParams::down2());
    vec![
        geom(2, 3, 32, 9, 7, 3, s3),
        geom(1, 32, 32, 6, 6, 3, s3),
        geom(2, 13, 70, 5, 7, 1, s1),
        geom(1, 32, 64, 4, 5, 1, s1),
        geom(2, 32, 32, 9, 9, 3, d2),
        geom(1, 5, 7, 8, 6, 3, d2),
        geom(3, 32, 3, 7, 5, 3, s3),
    ]
}

/// Test-local rounding, written from the definitions (not `Precision::round`).
fn round_here(p: Precision, x: f32) -> f64 {
    match p {
        Precision::Fp32 => x as f64,
        Precision::Bf16 => half::bf16::from_f32(x).to_f64(),
        Precision::Tf32 => {
            // the two tf32 neighbours, nearest wins, ties away from zero
            let lo = f32::from_bits(x.to_bits() & !0x1fff) as f64;
            let hi = f32::from_bits((x.to_bits() & !0x1fff) + 0x2000) as f64;
            if (x as f64 - lo).abs() < (hi - x as f64).abs() {
                lo
            } else {
                hi
            }
        }
    }
}

/// Naive direct convolution in f64 of the rounded inputs: (value, sum |terms|).
fn naive_forward(p: Precision, g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; g.n * g.co * g.ho * g.wo];
    let mut a = y.clone();
    for img in 0..g.n {
        for o in 0..g.co {
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    let at = ((img * g.co + o) * g.ho + oy) * g.wo + ox;
                    y[at] = b[o] as f64;
                    a[at] = (b[o] as f64).abs();
                    for c in 0..g.ci {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let (iy, ix) = (
                                    (oy * g.stride + ky) as i64 - g.pad_top as i64,
                                    (ox * g.stride + kx) as i64 - g.pad_left as i64,
                                );
                                if iy < 0 || ix < 0 || iy >= g.h as i64 || ix >= g.w as i64 {
                                    continue;
                                }
                                let xv = round_here(p, x[((img * g.ci + c) * g.h + iy as usize) * g.w + ix as usize]);
                                let wv = round_here(p, w[((o * g.ci + c) * g.kh + ky) * g.kw + kx]);
                                y[at] += xv * wv;
                                a[at] += (xv * wv).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (y, a)
}

#[test]
fn rounding_oracle_matches_plain_loops_and_its_adjoints() {
    let mut rng = TensorRng::new(31);
    for g in cases() {
        let x = rng.vec(g.n * g.ci * g.h * g.w, -1.0, 1.0);
        let w = rng.vec(g.co * g.ci * g.kh * g.kw, -1.0, 1.0);
        let b = rng.vec(g.co, -1.0, 1.0);
        let dy = rng.vec(g.n * g.co * g.ho * g.wo, -1.0, 1.0);
        for p in Precision::ALL {
            let o = reduced::conv2d_forward(p, &g, &x, &w, Some(&b));
            let (want, want_abs) = naive_forward(p, &g, &x, &w, &b);
            for i in 0..want.len() {
                assert!((o.value[i] - want[i]).abs() <= 1e-12 * want_abs[i].max(1e-30), "{p} {g:?} fwd {i}");
                assert!((o.abs_sum[i] - want_abs[i]).abs() <= 1e-12 * want_abs[i], "{p} {g:?} |fwd| {i}");
            }
            // the backward passes are adjoints of the forward map of the
            // rounded inputs: <dy~, conv(x~, w~)> = <x~, dx> = <w~, dw>
            let rd = |v: &[f32]| v.iter().map(|&t| round_here(p, t)).collect::<Vec<f64>>();
            let (xr, wr, dyr) = (rd(&x), rd(&w), rd(&dy));
            let fwd = reduced::conv2d_forward(p, &g, &x, &w, None).value;
            let dx = reduced::conv2d_backward_data(p, &g, &dy, &w).value;
            let dw = reduced::conv2d_backward_weight(p, &g, &dy, &x).value;
            let (l, r1, r2) = (dot(&dyr, &fwd), dot(&xr, &dx), dot(&wr, &dw));
            let scale: f64 = dyr.iter().zip(&fwd).map(|(a, b)| (a * b).abs()).sum::<f64>().max(1.0);
            assert!((l - r1).abs() <= 1e-11 * scale && (l - r2).abs() <= 1e-11 * scale, "{p} {g:?}: {l} {r1} {r2}");
        }
    }
}

fn gpu(t: &Tensor) -> &diffuse_tensor::gpu::GpuStorage {
    match t.storage() {
        Storage::Gpu(s) => s,
        Storage::Cpu(_) => panic!("expected a GPU tensor"),
    }
}

/// Worst |got - oracle| / bound, asserting every element is within it.
fn check(what: &str, got: &[f32], o: &Rounded, additions: usize) -> f64 {
    assert_eq!(got.len(), o.value.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, &v) in got.iter().enumerate() {
        let b = accumulation_bound(additions, o.abs_sum[i]);
        let err = (v as f64 - o.value[i]).abs();
        assert!(err <= b, "{what}: element {i}: {v} vs oracle {} (|err| {err:.3e} > bound {b:.3e})", o.value[i]);
        if b > 0.0 {
            worst = worst.max(err / b);
        }
    }
    worst
}

/// Fraction of elements outside bound (1) against an oracle of another
/// precision (the bound must be able to fail).
fn violations(got: &[f32], o: &Rounded, additions: usize) -> f64 {
    let bad = got
        .iter()
        .enumerate()
        .filter(|&(i, &v)| (v as f64 - o.value[i]).abs() > accumulation_bound(additions, o.abs_sum[i]))
        .count();
    bad as f64 / got.len().max(1) as f64
}

/// The three tensor-core passes on the device against the rounding oracle,
/// for bf16 and tf32, under bound (1) elementwise; bound (2) against the
/// unrounded f64 sum; and the f32 oracle must violate bound (1).
fn tensor_core_conv2d_matches_the_rounding_oracle(dut: &DeviceUnderTest) {
    let Device::Gpu(dev) = &dut.device else {
        log("tensor-core conv2d: no tensor cores on the CPU (its reduced-precision path is the oracle itself)");
        return;
    };
    let mut rng = TensorRng::new(32);
    let mut worst = [[0.0f64; 3]; 2];
    let mut fp32_violations = [[1.0f64; 3]; 2];
    for g in cases() {
        let x = rng.vec(g.n * g.ci * g.h * g.w, -1.0, 1.0);
        let w = rng.vec(g.co * g.ci * g.kh * g.kw, -1.0, 1.0);
        let b = rng.vec(g.co, -1.0, 1.0);
        let dy = rng.vec(g.n * g.co * g.ho * g.wo, -1.0, 1.0);
        let up = |v: &[f32], shape: &[usize]| on(&Tensor::from_vec(v.to_vec(), shape.to_vec()).unwrap(), &dut.device);
        let (xg, wg, bg) = (up(&x, &[g.n, g.ci, g.h, g.w]), up(&w, &[g.co, g.ci, g.kh, g.kw]), up(&b, &[g.co]));
        let dyg = up(&dy, &[g.n, g.co, g.ho, g.wo]);
        let (splits, _) = weight_grad_splits(&g);
        let adds = [g.k() + 1, g.co * g.kh * g.kw, g.n * g.ho * g.wo + splits];
        for (pi, p) in [Precision::Bf16, Precision::Tf32].into_iter().enumerate() {
            let got = [
                conv2d_tc::conv2d_forward(dev, gpu(&xg), gpu(&wg), Some(gpu(&bg)), &g, p),
                conv2d_tc::conv2d_backward_data(dev, gpu(&dyg), gpu(&wg), &g, p),
                conv2d_tc::conv2d_backward_weight(dev, gpu(&dyg), gpu(&xg), &g, p),
            ]
            .map(|r| r.unwrap().download_f32().unwrap());
            let oracle = |q: Precision| {
                [
                    reduced::conv2d_forward(q, &g, &x, &w, Some(&b)),
                    reduced::conv2d_backward_data(q, &g, &dy, &w),
                    reduced::conv2d_backward_weight(q, &g, &dy, &x),
                ]
            };
            let (want, exact) = (oracle(p), oracle(Precision::Fp32));
            let u_in = p.input_unit_roundoff();
            for pass in 0..3 {
                let what = format!("{p} pass {pass} {g:?} on {}", dut.label);
                worst[pi][pass] = worst[pi][pass].max(check(&what, &got[pass], &want[pass], adds[pass]));
                // (2): against the unrounded inputs' exact sum
                for (i, &v) in got[pass].iter().enumerate() {
                    let b2 = (2.0 * u_in + u_in * u_in) * exact[pass].abs_sum[i]
                        + accumulation_bound(adds[pass], want[pass].abs_sum[i]);
                    let err = (v as f64 - exact[pass].value[i]).abs();
                    assert!(err <= b2, "{what}: element {i}: |err| {err:.3e} vs exact > bound (2) {b2:.3e}");
                }
                fp32_violations[pi][pass] =
                    fp32_violations[pi][pass].min(violations(&got[pass], &exact[pass], adds[pass]));
            }
        }
    }
    for (pi, p) in [Precision::Bf16, Precision::Tf32].into_iter().enumerate() {
        for (pass, &share) in fp32_violations[pi].iter().enumerate() {
            // rounding the inputs shows: against the unrounded oracle, bound (1)
            // fails on a share of the outputs in every case (measured: bf16
            // 84-94%, tf32 9% and up, in the worst case of each pass)
            assert!(
                share > 0.05,
                "{p} pass {pass}: only {:.0}% of outputs break bound (1) against the f32 oracle: the bound cannot tell \
                 rounded inputs from unrounded ones",
                100.0 * share
            );
        }
        log(&format!(
            "tensor-core conv2d {p} on {}: worst |err| / bound (1): fwd {:.3}, data {:.3}, weight {:.3}; fewest outputs \
             breaking (1) against the f32 oracle: {:.0}% / {:.0}% / {:.0}%",
            dut.label,
            worst[pi][0],
            worst[pi][1],
            worst[pi][2],
            100.0 * fp32_violations[pi][0],
            100.0 * fp32_violations[pi][1],
            100.0 * fp32_violations[pi][2]
        ));
    }
}

per_device!(
    tensor_core_conv2d_matches_the_rounding_oracle,
    tensor_core_conv2d_matches_the_rounding_oracle_cpu,
    tensor_core_conv2d_matches_the_rounding_oracle_emu,
    tensor_core_conv2d_matches_the_rounding_oracle_cuda
);

/// The tensor-core linear layer (forward, data and weight gradients) against
/// the rounding oracle under bound (1), for bf16 and tf32; sizes that are
/// not multiples of 16 (and one that is), rows from 1 to 70.
fn tensor_core_linear_matches_the_rounding_oracle(dut: &DeviceUnderTest) {
    use diffuse_tensor::geom::LinearDims;
    use diffuse_tensor::gpu::launch::linear_tc;
    let Device::Gpu(dev) = &dut.device else {
        log("tensor-core linear: no tensor cores on the CPU");
        return;
    };
    let mut rng = TensorRng::new(33);
    let mut worst = [[0.0f64; 3]; 2];
    for (n, d_in, d_out) in [(37, 45, 70), (3, 128, 130), (70, 13, 7), (1, 1, 5), (16, 32, 64)] {
        let d = LinearDims { n, d_in, d_out };
        let x = rng.vec(n * d_in, -1.0, 1.0);
        let w = rng.vec(d_out * d_in, -1.0, 1.0);
        let b = rng.vec(d_out, -1.0, 1.0);
        let dy = rng.vec(n * d_out, -1.0, 1.0);
        let up = |v: &[f32], shape: &[usize]| on(&Tensor::from_vec(v.to_vec(), shape.to_vec()).unwrap(), &dut.device);
        let (xg, wg, bg, dyg) = (up(&x, &[n, d_in]), up(&w, &[d_out, d_in]), up(&b, &[d_out]), up(&dy, &[n, d_out]));
        for (pi, p) in [Precision::Bf16, Precision::Tf32].into_iter().enumerate() {
            let y = linear_tc::linear_forward(dev, gpu(&xg), gpu(&wg), Some(gpu(&bg)), d, p).unwrap();
            let (dx, dw, db) = linear_tc::linear_backward(dev, gpu(&dyg), gpu(&xg), gpu(&wg), d, p).unwrap();
            let got = [y, dx, dw].map(|s| s.download_f32().unwrap());
            let want = [
                reduced::linear_forward(p, d, &x, &w, Some(&b)),
                reduced::linear_backward_data(p, d, &dy, &w),
                reduced::linear_backward_weight(p, d, &dy, &x),
            ];
            let adds = [d_in + 1, d_out, n];
            for pass in 0..3 {
                let what = format!("{p} linear pass {pass} n{n} in{d_in} out{d_out} on {}", dut.label);
                worst[pi][pass] = worst[pi][pass].max(check(&what, &got[pass], &want[pass], adds[pass]));
            }
            // the bias gradient is an f32 column sum of dy (no rounding)
            let db = db.download_f32().unwrap();
            for o in 0..d_out {
                let (s, a) = (0..n).fold((0.0f64, 0.0f64), |(s, a), i| {
                    (s + dy[i * d_out + o] as f64, a + dy[i * d_out + o].abs() as f64)
                });
                assert!((db[o] as f64 - s).abs() <= accumulation_bound(n, a), "{p} db[{o}]");
            }
        }
    }
    for (pi, p) in [Precision::Bf16, Precision::Tf32].into_iter().enumerate() {
        log(&format!(
            "tensor-core linear {p} on {}: worst |err| / bound (1): fwd {:.3}, data {:.3}, weight {:.3}",
            dut.label, worst[pi][0], worst[pi][1], worst[pi][2]
        ));
    }
}

per_device!(
    tensor_core_linear_matches_the_rounding_oracle,
    tensor_core_linear_matches_the_rounding_oracle_cpu,
    tensor_core_linear_matches_the_rounding_oracle_emu,
    tensor_core_linear_matches_the_rounding_oracle_cuda
);

/// The `Precision` setting of the ops (`ops::*_with`): fp32 is today's path
/// bit for bit; tf32 / bf16 (the f32 GEMM on rounded inputs on the CPU, the
/// tensor-core kernels on a GPU) are within bound (1) of the rounding oracle,
/// and outside the unrounded oracle's bound on more than a tenth of outputs.
fn precision_setting_routes_conv_and_linear(dut: &DeviceUnderTest) {
    use diffuse_tensor::geom::LinearDims;
    use diffuse_tensor::ops;
    let mut rng = TensorRng::new(34);
    let (p3, g) = (Conv2dParams::same(3), geom(2, 5, 18, 7, 6, 3, Conv2dParams::same(3)));
    let d = LinearDims { n: 9, d_in: 20, d_out: 33 };
    let v = |rng: &mut TensorRng, n: usize| rng.vec(n, -1.0, 1.0);
    let (x, w, b, dy) = (
        v(&mut rng, g.n * g.ci * g.h * g.w),
        v(&mut rng, g.co * g.ci * 9),
        v(&mut rng, g.co),
        v(&mut rng, g.n * g.co * g.ho * g.wo),
    );
    let (lx, lw, lb, ldy) =
        (v(&mut rng, d.n * d.d_in), v(&mut rng, d.d_out * d.d_in), v(&mut rng, d.d_out), v(&mut rng, d.n * d.d_out));
    let t = |v: &[f32], s: &[usize]| on(&Tensor::from_vec(v.to_vec(), s.to_vec()).unwrap(), &dut.device);
    let (xt, wt, bt, dyt) =
        (t(&x, &[g.n, g.ci, g.h, g.w]), t(&w, &[g.co, g.ci, 3, 3]), t(&b, &[g.co]), t(&dy, &[g.n, g.co, g.ho, g.wo]));
    let (lxt, lwt, lbt, ldyt) =
        (t(&lx, &[d.n, d.d_in]), t(&lw, &[d.d_out, d.d_in]), t(&lb, &[d.d_out]), t(&ldy, &[d.n, d.d_out]));
    let run = |prec: Precision| -> [Vec<f32>; 6] {
        let lg = ops::linear_backward_with(&ldyt, &lxt, &lwt, prec).unwrap();
        [
            ops::conv2d_forward_with(&xt, &wt, Some(&bt), &p3, prec).unwrap(),
            ops::conv2d_backward_data_with(&dyt, &wt, xt.shape(), &p3, prec).unwrap(),
            ops::conv2d_backward_weight_with(&dyt, &xt, wt.shape(), &p3, prec).unwrap(),
            ops::linear_forward_with(&lxt, &lwt, Some(&lbt), prec).unwrap(),
            lg.dx,
            lg.dw,
        ]
        .map(|t| t.to_vec_f32().unwrap())
    };
    let lg = ops::linear_backward(&ldyt, &lxt, &lwt).unwrap();
    let today = [
        ops::conv2d_forward(&xt, &wt, Some(&bt), &p3).unwrap(),
        ops::conv2d_backward_data(&dyt, &wt, xt.shape(), &p3).unwrap(),
        ops::conv2d_backward_weight(&dyt, &xt, wt.shape(), &p3).unwrap(),
        ops::linear_forward(&lxt, &lwt, Some(&lbt)).unwrap(),
        lg.dx,
        lg.dw,
    ]
    .map(|t| t.to_vec_f32().unwrap());
    let fp32 = run(Precision::Fp32);
    for i in 0..6 {
        assert!(
            fp32[i].iter().zip(&today[i]).all(|(a, b)| a.to_bits() == b.to_bits()),
            "fp32 output {i} differs from today's path"
        );
    }
    let (splits, _) = weight_grad_splits(&g);
    let adds = [g.k() + 1, g.co * 9, g.n * g.ho * g.wo + splits, d.d_in + 1, d.d_out, d.n];
    for prec in [Precision::Bf16, Precision::Tf32] {
        let got = run(prec);
        let want = [
            reduced::conv2d_forward(prec, &g, &x, &w, Some(&b)),
            reduced::conv2d_backward_data(prec, &g, &dy, &w),
            reduced::conv2d_backward_weight(prec, &g, &dy, &x),
            reduced::linear_forward(prec, d, &lx, &lw, Some(&lb)),
            reduced::linear_backward_data(prec, d, &ldy, &lw),
            reduced::linear_backward_weight(prec, d, &ldy, &lx),
        ];
        let exact = [
            reduced::conv2d_forward(Precision::Fp32, &g, &x, &w, Some(&b)),
            reduced::conv2d_backward_data(Precision::Fp32, &g, &dy, &w),
            reduced::conv2d_backward_weight(Precision::Fp32, &g, &dy, &x),
            reduced::linear_forward(Precision::Fp32, d, &lx, &lw, Some(&lb)),
            reduced::linear_backward_data(Precision::Fp32, d, &ldy, &lw),
            reduced::linear_backward_weight(Precision::Fp32, d, &ldy, &lx),
        ];
        let (mut outside_unrounded, mut total) = (0, 0);
        for i in 0..6 {
            for (j, &v) in got[i].iter().enumerate() {
                let bound = accumulation_bound(adds[i], want[i].abs_sum[j]);
                assert!((v as f64 - want[i].value[j]).abs() <= bound, "{prec} output {i}[{j}] on {}", dut.label);
                let bound = accumulation_bound(adds[i], exact[i].abs_sum[j]);
                outside_unrounded += usize::from((v as f64 - exact[i].value[j]).abs() > bound);
                total += 1;
            }
        }
        // the rounding is there: the unrounded oracle's bound misses many outputs
        assert!(
            outside_unrounded * 10 > total,
            "{prec} on {}: only {outside_unrounded} of {total} outputs show rounding",
            dut.label
        );
    }
    log(&format!(
        "precision setting on {}: fp32 bit-identical to today's path; tf32 and bf16 within bound (1)",
        dut.label
    ));
}

per_device!(
    precision_setting_routes_conv_and_linear,
    precision_setting_routes_conv_and_linear_cpu,
    precision_setting_routes_conv_and_linear_emu,
    precision_setting_routes_conv_and_linear_cuda
);

/// An input stored in bf16 (a training cache's activation, `to_dtype`)
/// gives the convolution's forward and weight gradient the same bits as its
/// f32 original at bf16 precision: the `_bf16in` kernels widen exactly what
/// the f32 kernels round to while staging. Bit identity can fail: a tile
/// index or an element size wrong in the bf16 gather moves or mixes values.
fn bf16_stored_input_gives_the_same_bits(dut: &DeviceUnderTest) {
    use diffuse_tensor::ops;
    use diffuse_tensor::DType;
    if dut.is_cpu() {
        log("bf16-stored conv input: no bf16 storage on the CPU");
        return;
    }
    let mut rng = TensorRng::new(35);
    let (s3, s1, d2) = (Conv2dParams::same(3), Conv2dParams::same(1), Conv2dParams::down2());
    // cases()'s shapes (conv_in, residual, 1x1 skips, downsample, conv_out)
    // and a 96-channel residual conv
    let shapes = [
        (2, 3, 32, 9, 7, 3, s3),
        (1, 32, 32, 6, 6, 3, s3),
        (2, 13, 70, 5, 7, 1, s1),
        (2, 32, 32, 9, 9, 3, d2),
        (1, 5, 7, 8, 6, 3, d2),
        (3, 32, 3, 7, 5, 3, s3),
        (3, 96, 40, 6, 5, 3, s3),
    ];
    for (n, ci, co, h, w, k, p) in shapes {
        let g = geom(n, ci, co, h, w, k, p);
        let t = |n: usize, s: &[usize], rng: &mut TensorRng| {
            on(&Tensor::from_vec(rng.vec(n, -1.0, 1.0), s.to_vec()).unwrap(), &dut.device)
        };
        let x = t(g.n * g.ci * g.h * g.w, &[g.n, g.ci, g.h, g.w], &mut rng);
        let w = t(g.co * g.ci * g.kh * g.kw, &[g.co, g.ci, g.kh, g.kw], &mut rng);
        let b = t(g.co, &[g.co], &mut rng);
        let dy = t(g.n * g.co * g.ho * g.wo, &[g.n, g.co, g.ho, g.wo], &mut rng);
        let xh = x.to_dtype(DType::BF16).unwrap();
        let bf = Precision::Bf16;
        let pairs = [
            (
                ops::conv2d_forward_with(&xh, &w, Some(&b), &p, bf).unwrap(),
                ops::conv2d_forward_with(&x, &w, Some(&b), &p, bf).unwrap(),
            ),
            (
                ops::conv2d_backward_weight_with(&dy, &xh, w.shape(), &p, bf).unwrap(),
                ops::conv2d_backward_weight_with(&dy, &x, w.shape(), &p, bf).unwrap(),
            ),
        ];
        for (pass, (got, want)) in pairs.iter().enumerate() {
            let (got, want) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
            assert!(
                got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "pass {pass} ({}) {g:?} on {}: bf16-stored x differs from f32 x",
                ["forward", "weight gradient"][pass],
                dut.label
            );
        }
    }
    log(&format!("bf16-stored conv input on {}: forward and weight gradient bit-identical to f32 input", dut.label));
}

per_device!(
    bf16_stored_input_gives_the_same_bits,
    bf16_stored_input_gives_the_same_bits_cpu,
    bf16_stored_input_gives_the_same_bits_emu,
    bf16_stored_input_gives_the_same_bits_cuda
);
