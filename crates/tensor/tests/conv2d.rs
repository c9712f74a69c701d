//! conv2d (`ops/conv.rs`, `cpu/conv.rs`): naive f64 oracles written here with
//! plain loops, central finite differences, linearity and adjoint identities,
//! bit-for-bit determinism across thread counts, and error cases.

mod common;
use common::*;
use diffuse_tensor::ops::{self, Conv2dParams};
use diffuse_tensor::{Precision, Shape, Tensor};
use proptest::prelude::*;

// ------------------------------------------------------------------ cases

/// One convolution problem: sizes, kernel, stride/padding and a data seed.
#[derive(Clone, Debug)]
struct Case {
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    p: Conv2dParams,
    seed: u64,
}

impl Case {
    /// Output size, computed here from the definition (not by the library).
    fn out_hw(&self) -> (usize, usize) {
        let s = self.p.stride;
        (
            (self.h + self.p.pad_top + self.p.pad_bottom - self.kh) / s + 1,
            (self.w + self.p.pad_left + self.p.pad_right - self.kw) / s + 1,
        )
    }
    fn fits(&self) -> bool {
        self.p.stride > 0
            && self.kh <= self.h + self.p.pad_top + self.p.pad_bottom
            && self.kw <= self.w + self.p.pad_left + self.p.pad_right
    }
    fn x_dims(&self) -> Vec<usize> {
        vec![self.n, self.ci, self.h, self.w]
    }
    fn w_dims(&self) -> Vec<usize> {
        vec![self.co, self.ci, self.kh, self.kw]
    }
    fn y_dims(&self) -> Vec<usize> {
        let (ho, wo) = self.out_hw();
        vec![self.n, self.co, ho, wo]
    }
    /// Random x, w, b and an output-shaped r (the upstream gradient).
    fn data(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut rng = TestRng::new(self.seed);
        let x = rng.vec(self.x_dims().iter().product());
        let w = rng.vec(self.w_dims().iter().product());
        let b = rng.vec(self.co);
        let r = rng.vec(self.y_dims().iter().product());
        (x, w, b, r)
    }
}

fn pads(stride: usize, pt: usize, pb: usize, pl: usize, pr: usize) -> Conv2dParams {
    Conv2dParams { stride, pad_top: pt, pad_bottom: pb, pad_left: pl, pad_right: pr }
}

/// The U-Net's three convs, and general kernels/strides/asymmetric pads.
fn kernels() -> impl Strategy<Value = (usize, usize, Conv2dParams)> {
    prop_oneof![
        Just((3, 3, Conv2dParams::same(3))),
        Just((3, 3, Conv2dParams::down2())),
        Just((1, 1, Conv2dParams::same(1))),
        (1..=4usize, 1..=4usize, 1..=3usize, 0..=2usize, 0..=2usize, 0..=2usize, 0..=2usize)
            .prop_map(|(kh, kw, s, pt, pb, pl, pr)| (kh, kw, pads(s, pt, pb, pl, pr))),
    ]
}

fn cases(max_n: usize, max_c: usize, max_hw: usize) -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(1usize), 1..=max_n],
        awkward(max_c),
        awkward(max_c),
        awkward(max_hw),
        awkward(max_hw),
        kernels(),
        any::<u64>(),
    )
        .prop_map(|(n, ci, co, h, w, (kh, kw, p), seed)| Case { n, ci, co, h, w, kh, kw, p, seed })
        .prop_filter("kernel must fit the padded input", Case::fits)
}

// ---------------------------------------------------------------- oracles

/// The input index `(row, col)` that output `(oy, ox)` reads through tap
/// `(i, j)`, or None where it falls in the zero padding.
fn tap(c: &Case, oy: usize, ox: usize, i: usize, j: usize) -> Option<(usize, usize)> {
    let iy = (oy * c.p.stride + i) as isize - c.p.pad_top as isize;
    let ix = (ox * c.p.stride + j) as isize - c.p.pad_left as isize;
    if iy < 0 || ix < 0 || iy >= c.h as isize || ix >= c.w as isize {
        None
    } else {
        Some((iy as usize, ix as usize))
    }
}

/// Calls `f(y_index, x_index, w_index)` for every multiply of the conv.
fn for_each_term(c: &Case, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = c.out_hw();
    for n in 0..c.n {
        for o in 0..c.co {
            for oy in 0..ho {
                for ox in 0..wo {
                    let yi = ((n * c.co + o) * ho + oy) * wo + ox;
                    for ch in 0..c.ci {
                        for i in 0..c.kh {
                            for j in 0..c.kw {
                                if let Some((iy, ix)) = tap(c, oy, ox, i, j) {
                                    let xi = ((n * c.ci + ch) * c.h + iy) * c.w + ix;
                                    let wi = ((o * c.ci + ch) * c.kh + i) * c.kw + j;
                                    f(yi, xi, wi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn oracle_forward(c: &Case, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let (ho, wo) = c.out_hw();
    let mut y = vec![0.0; c.n * c.co * ho * wo];
    if let Some(b) = b {
        for (idx, v) in y.iter_mut().enumerate() {
            *v = b[(idx / (ho * wo)) % c.co];
        }
    }
    for_each_term(c, |yi, xi, wi| y[yi] += x[xi] * w[wi]);
    y
}

fn oracle_backward_data(c: &Case, dy: &[f64], w: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; x_len(c)];
    for_each_term(c, |yi, xi, wi| dx[xi] += dy[yi] * w[wi]);
    dx
}

fn oracle_backward_weight(c: &Case, dy: &[f64], x: &[f64]) -> Vec<f64> {
    let mut dw = vec![0.0; c.w_dims().iter().product()];
    for_each_term(c, |yi, xi, wi| dw[wi] += dy[yi] * x[xi]);
    dw
}

fn oracle_backward_bias(c: &Case, dy: &[f64]) -> Vec<f64> {
    let (ho, wo) = c.out_hw();
    let mut db = vec![0.0; c.co];
    for (idx, v) in dy.iter().enumerate() {
        db[(idx / (ho * wo)) % c.co] += v;
    }
    db
}

fn x_len(c: &Case) -> usize {
    c.x_dims().iter().product()
}

// ------------------------------------------------------- op shorthands

type Mk = fn(&[f64], &[usize]) -> Tensor;

fn fwd(mk: Mk, c: &Case, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let bt = b.map(|b| mk(b, &[c.co]));
    v64(&ops::conv2d_forward(&mk(x, &c.x_dims()), &mk(w, &c.w_dims()), bt.as_ref(), &c.p).unwrap())
}

fn bwd_data(mk: Mk, c: &Case, dy: &[f64], w: &[f64]) -> Vec<f64> {
    v64(&ops::conv2d_backward_data(&mk(dy, &c.y_dims()), &mk(w, &c.w_dims()), &Shape::new(c.x_dims()), &c.p).unwrap())
}

fn bwd_weight(mk: Mk, c: &Case, dy: &[f64], x: &[f64]) -> Vec<f64> {
    v64(&ops::conv2d_backward_weight(&mk(dy, &c.y_dims()), &mk(x, &c.x_dims()), &Shape::new(c.w_dims()), &c.p).unwrap())
}

fn bwd_bias(mk: Mk, c: &Case, dy: &[f64]) -> Vec<f64> {
    v64(&ops::conv2d_backward_bias(&mk(dy, &c.y_dims())).unwrap())
}

fn axpby(a: f64, x: &[f64], b: f64, y: &[f64]) -> Vec<f64> {
    x.iter().zip(y).map(|(x, y)| a * x + b * y).collect()
}

// ------------------------------------------------------------- proptests

proptest! {
    #![proptest_config(proptest_config(96))]

    #[test]
    fn forward_matches_f64_oracle(c in cases(3, 13, 13), with_bias in any::<bool>()) {
        let (x, w, b, _) = c.data();
        let b = with_bias.then_some(&b[..]);
        let want = oracle_forward(&c, &x, &w, b);
        let scale = oracle_forward(&c, &abs(&x), &abs(&w), b.map(abs).as_deref());
        assert_close_scaled("conv2d forward f32", &fwd(t32, &c, &x, &w, b), &want, &scale, 1e-5);
        assert_close_scaled("conv2d forward f64", &fwd(t64, &c, &x, &w, b), &want, &scale, 1e-12);
    }

    #[test]
    fn backward_matches_f64_oracles(c in cases(3, 13, 13)) {
        let (x, w, _, r) = c.data();
        let (ax, aw, ar) = (abs(&x), abs(&w), abs(&r));
        let (dx, dw, db) = (bwd_data(t32, &c, &r, &w), bwd_weight(t32, &c, &r, &x), bwd_bias(t32, &c, &r));
        assert_close_scaled("backward data f32", &dx, &oracle_backward_data(&c, &r, &w), &oracle_backward_data(&c, &ar, &aw), 1e-5);
        assert_close_scaled("backward weight f32", &dw, &oracle_backward_weight(&c, &r, &x), &oracle_backward_weight(&c, &ar, &ax), 1e-5);
        assert_close_scaled("backward bias f32", &db, &oracle_backward_bias(&c, &r), &oracle_backward_bias(&c, &ar), 1e-5);
    }

    #[test]
    fn conv_is_linear_in_input_and_weight(c in cases(2, 7, 9), a in -2.0..2.0f64, bb in -2.0..2.0f64) {
        let (x1, w1, _, _) = c.data();
        let (x2, w2, _, _) = Case { seed: c.seed ^ 1, ..c.clone() }.data();
        let mag = |x: &[f64], w: &[f64]| oracle_forward(&c, &abs(x), &abs(w), None);
        let scale_x = axpby(a.abs(), &mag(&x1, &w1), bb.abs(), &mag(&x2, &w1));
        let scale_w = axpby(a.abs(), &mag(&x1, &w1), bb.abs(), &mag(&x1, &w2));
        for (mk, tol) in [(t32 as Mk, 1e-5), (t64 as Mk, 1e-12)] {
            let lhs = fwd(mk, &c, &axpby(a, &x1, bb, &x2), &w1, None);
            let rhs = axpby(a, &fwd(mk, &c, &x1, &w1, None), bb, &fwd(mk, &c, &x2, &w1, None));
            assert_close_scaled("linear in x", &lhs, &rhs, &scale_x, tol);
            let lhs = fwd(mk, &c, &x1, &axpby(a, &w1, bb, &w2), None);
            let rhs = axpby(a, &fwd(mk, &c, &x1, &w1, None), bb, &fwd(mk, &c, &x1, &w2, None));
            assert_close_scaled("linear in w", &lhs, &rhs, &scale_w, tol);
        }
    }

    /// <conv(x, w), y> = <x, backward_data(y, w)> = <w, backward_weight(y, x)>.
    #[test]
    fn backward_ops_are_adjoints(c in cases(3, 13, 13)) {
        let (x, w, _, y) = c.data();
        // Every identity sums the same products x*w*y: their absolute sum is the scale.
        let scale = dot(&oracle_forward(&c, &abs(&x), &abs(&w), None), &abs(&y));
        for (mk, tol) in [(t32 as Mk, 1e-5), (t64 as Mk, 1e-13)] {
            let lhs = dot(&fwd(mk, &c, &x, &w, None), &y);
            let via_x = dot(&x, &bwd_data(mk, &c, &y, &w));
            let via_w = dot(&w, &bwd_weight(mk, &c, &y, &x));
            let (ex, ew) = ((lhs - via_x).abs() / scale.max(1e-30), (lhs - via_w).abs() / scale.max(1e-30));
            prop_assert!(ex < tol && ew < tol, "adjoint errors {ex:.2e} (data), {ew:.2e} (weight) exceed {tol:.0e}");
        }
    }
}

proptest! {
    #![proptest_config(proptest_config(48))]

    /// L(x, w, b) = <conv(x, w) + b, r>, differentiated numerically in f64.
    #[test]
    fn backward_matches_finite_differences(c in cases(2, 7, 7)) {
        let (x, w, b, r) = c.data();
        let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&fwd(t64, &c, x, w, Some(b)), &r);
        let h = 1e-4;
        let fd_x = fd_grad(&x, h, |x| loss(x, &w, &b));
        assert_close("dx vs finite differences", &bwd_data(t64, &c, &r, &w), &fd_x, 1e-6);
        let fd_w = fd_grad(&w, h, |w| loss(&x, w, &b));
        assert_close("dw vs finite differences", &bwd_weight(t64, &c, &r, &x), &fd_w, 1e-6);
        let fd_b = fd_grad(&b, h, |b| loss(&x, &w, b));
        assert_close("db vs finite differences", &bwd_bias(t64, &c, &r), &fd_b, 1e-6);
    }
}

// ------------------------------------------------- batched kernel paths

fn big(n: usize, hw: usize, kh: usize, p: Conv2dParams) -> Case {
    Case { n, ci: 3, co: 5, h: hw, w: hw, kh, kw: kh, p, seed: (n * 100 + hw) as u64 }
}

/// Large odd batches: several images per gemm (small planes), one image per
/// gemm with many weight-gradient slots (large planes), uneven last groups.
#[test]
fn large_batches_match_oracles() {
    let kinds = [(3, Conv2dParams::same(3)), (3, Conv2dParams::down2()), (1, Conv2dParams::same(1))];
    for hw in [6, 28] {
        for (k, p) in kinds {
            let c = big(37, hw, k, p);
            let (x, w, b, r) = c.data();
            let what = |op: &str| format!("{op} {c:?}");
            let (ax, aw, ab, ar) = (abs(&x), abs(&w), abs(&b), abs(&r));
            for (mk, tol) in [(t32 as Mk, 1e-5), (t64 as Mk, 1e-12)] {
                let (y, dx) = (fwd(mk, &c, &x, &w, Some(&b)), bwd_data(mk, &c, &r, &w));
                let (dw, db) = (bwd_weight(mk, &c, &r, &x), bwd_bias(mk, &c, &r));
                let scale = oracle_forward(&c, &ax, &aw, Some(&ab));
                assert_close_scaled(&what("forward"), &y, &oracle_forward(&c, &x, &w, Some(&b)), &scale, tol);
                let scale = oracle_backward_data(&c, &ar, &aw);
                assert_close_scaled(&what("backward data"), &dx, &oracle_backward_data(&c, &r, &w), &scale, tol);
                let scale = oracle_backward_weight(&c, &ar, &ax);
                assert_close_scaled(&what("backward weight"), &dw, &oracle_backward_weight(&c, &r, &x), &scale, tol);
                let scale = oracle_backward_bias(&c, &ar);
                assert_close_scaled(&what("backward bias"), &db, &oracle_backward_bias(&c, &r), &scale, tol);
            }
        }
    }
}

/// The f32 forward, data gradient and weight gradient of each case against
/// the f64 oracles (bound 1e-5 of the products' magnitudes), and the same
/// bits on 1 and 3 threads: the check every fast f32 path is held to.
fn check_f32_paths(cases: &[Case]) {
    for c in cases {
        let (x, w, b, r) = c.data();
        let what = |op: &str| format!("{op} {c:?}");
        let (ax, aw, ab, ar) = (abs(&x), abs(&w), abs(&b), abs(&r));
        let run = || (fwd(t32, c, &x, &w, Some(&b)), bwd_data(t32, c, &r, &w), bwd_weight(t32, c, &r, &x));
        let (y, dx, dw) = run();
        let scale = oracle_forward(c, &ax, &aw, Some(&ab));
        assert_close_scaled(&what("forward"), &y, &oracle_forward(c, &x, &w, Some(&b)), &scale, 1e-5);
        let scale = oracle_backward_data(c, &ar, &aw);
        assert_close_scaled(&what("backward data"), &dx, &oracle_backward_data(c, &r, &w), &scale, 1e-5);
        let scale = oracle_backward_weight(c, &ar, &ax);
        assert_close_scaled(&what("backward weight"), &dw, &oracle_backward_weight(c, &r, &x), &scale, 1e-5);
        let bits = |v: &(Vec<f64>, Vec<f64>, Vec<f64>)| {
            [&v.0, &v.1, &v.2].map(|t| t.iter().map(|f| f.to_bits()).collect::<Vec<u64>>())
        };
        let first = bits(&(y, dx, dw));
        assert!(first == bits(&in_pool(1, run)), "1-thread pool differs ({c:?})");
        assert!(first == bits(&in_pool(3, run)), "3-thread pool differs ({c:?})");
        check_weight_and_bias_in_one_call(t32, c);
    }
}

fn bwd_weight_and_bias(mk: Mk, c: &Case, dy: &[f64], x: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (dw, db) = ops::conv2d_backward_weight_and_bias_with(
        &mk(dy, &c.y_dims()),
        &mk(x, &c.x_dims()),
        &Shape::new(c.w_dims()),
        &c.p,
        Precision::Fp32,
    )
    .unwrap();
    (v64(&dw), v64(&db))
}

/// `conv2d_backward_weight_and_bias_with` (the bias summed inside the weight
/// gradient's pass over dy) gives the bits of the two separate calls, on any
/// thread count, and db the f64 oracle's value.
fn check_weight_and_bias_in_one_call(mk: Mk, c: &Case) {
    let (x, _, _, r) = c.data();
    let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<u64>>();
    let (dw, db) = bwd_weight_and_bias(mk, c, &r, &x);
    assert_eq!(bits(&dw), bits(&bwd_weight(mk, c, &r, &x)), "dw of the joint call {c:?}");
    assert_eq!(bits(&db), bits(&bwd_bias(mk, c, &r)), "db of the joint call {c:?}");
    let scale = oracle_backward_bias(c, &abs(&r));
    assert_close_scaled(&format!("joint bias {c:?}"), &db, &oracle_backward_bias(c, &r), &scale, 1e-6);
    for threads in [1, 3] {
        let (dw1, db1) = in_pool(threads, || bwd_weight_and_bias(mk, c, &r, &x));
        assert!(bits(&dw1) == bits(&dw) && bits(&db1) == bits(&db), "{threads}-thread pool differs ({c:?})");
    }
}

/// The joint weight-and-bias call on the paths that sum the bias apart (the
/// direct one: strided, 1x1, few channels, f64) as well.
#[test]
fn weight_and_bias_in_one_call_equal_the_two_calls_on_every_path() {
    let cases = [
        Case { n: 3, ci: 5, co: 7, h: 9, w: 11, kh: 3, kw: 3, p: pads(2, 1, 1, 1, 1), seed: 61 },
        Case { n: 4, ci: 19, co: 13, h: 6, w: 5, kh: 1, kw: 1, p: Conv2dParams::same(1), seed: 62 },
        Case { n: 2, ci: 3, co: 9, h: 8, w: 7, kh: 3, kw: 3, p: Conv2dParams::same(3), seed: 63 },
    ];
    for c in &cases {
        check_weight_and_bias_in_one_call(t32, c);
        check_weight_and_bias_in_one_call(t64, c);
    }
    // f64 at a Winograd-sized shape stays on the direct path
    let c = Case { n: 3, ci: 16, co: 17, h: 13, w: 2, kh: 3, kw: 3, p: Conv2dParams::same(3), seed: 64 };
    check_weight_and_bias_in_one_call(t64, &c);
}

/// The f32 3x3 stride-1 convs with at least 128 channels each way and 384
/// both together take the Winograd F(4x4, 3x3) path
/// (`cpu/conv2d/winograd_2d.rs`), forward, data gradient and weight gradient.
/// Held to the same oracles and bound as the direct path, on channel counts
/// that are not multiples of 16, output sizes that cut the last tile (21 rows, 35
/// and 18 columns), overlapping blocks of tiles along a row, asymmetric
/// padding, and a batch cut into three chunks; and bit-identical across thread
/// counts.
#[test]
fn winograd_2d_sized_convs_match_oracles() {
    let cases = [
        Case { n: 1, ci: 256, co: 137, h: 21, w: 35, kh: 3, kw: 3, p: Conv2dParams::same(3), seed: 31 },
        Case { n: 1, ci: 131, co: 256, h: 14, w: 18, kh: 3, kw: 3, p: pads(1, 2, 0, 0, 2), seed: 32 },
        // 130 one-tile images: chunks of 44, 44 and 42.
        Case { n: 130, ci: 128, co: 256, h: 2, w: 2, kh: 3, kw: 3, p: Conv2dParams::same(3), seed: 33 },
    ];
    check_f32_paths(&cases);
}

/// The f32 3x3 stride-1 convs with at least 16 channels each way take the
/// Winograd F(4, 3) path (`cpu/conv2d/winograd_1d.rs`) unless the 2-D one
/// above takes them: forward, stride-1 data gradient and weight gradient. Held
/// to the same oracles and bound as the direct path on channel counts that
/// are not multiples of 16, output heights of every residue mod 4 (the last
/// tile cut), widths that take each block width of the transforms (1-3, 4-7,
/// 8-15, 16 and more), asymmetric and no padding, and a batch of uneven
/// image groups and weight slots; and bit-identical across thread counts.
#[test]
fn winograd_1d_sized_convs_match_oracles() {
    let cases = [
        Case { n: 3, ci: 16, co: 17, h: 13, w: 2, kh: 3, kw: 3, p: Conv2dParams::same(3), seed: 41 },
        Case { n: 5, ci: 17, co: 16, h: 10, w: 5, kh: 3, kw: 3, p: pads(1, 2, 0, 0, 2), seed: 42 },
        Case { n: 37, ci: 16, co: 20, h: 7, w: 7, kh: 3, kw: 3, p: Conv2dParams::same(3), seed: 43 },
        Case { n: 2, ci: 24, co: 16, h: 11, w: 37, kh: 3, kw: 3, p: pads(1, 0, 2, 1, 0), seed: 44 },
        Case { n: 1, ci: 16, co: 18, h: 4, w: 12, kh: 3, kw: 3, p: pads(1, 0, 0, 0, 0), seed: 45 },
        // 128 channels each way stay here.
        Case { n: 3, ci: 128, co: 128, h: 15, w: 16, kh: 3, kw: 3, p: Conv2dParams::same(3), seed: 46 },
    ];
    check_f32_paths(&cases);
}

#[test]
fn known_values_3x3_same() {
    // All-ones 3x3 kernel on a 3x3 input counts each pixel's in-bounds neighbours' sum.
    let c = Case { n: 1, ci: 1, co: 1, h: 3, w: 3, kh: 3, kw: 3, p: Conv2dParams::same(3), seed: 0 };
    let x: Vec<f64> = (1..=9).map(f64::from).collect();
    let y = fwd(t64, &c, &x, &[1.0; 9], Some(&[0.5]));
    assert_eq!(y, vec![12.5, 21.5, 16.5, 27.5, 45.5, 33.5, 24.5, 39.5, 28.5]);
}

#[test]
fn params_constructors_and_output_sizes() {
    assert_eq!(Conv2dParams::same(3), pads(1, 1, 1, 1, 1));
    assert_eq!(Conv2dParams::same(1), pads(1, 0, 0, 0, 0));
    assert_eq!(Conv2dParams::down2(), pads(2, 0, 1, 0, 1));
    assert_eq!(Conv2dParams::same(3).output_hw(14, 9, 3, 3).unwrap(), (14, 9));
    assert_eq!(Conv2dParams::down2().output_hw(28, 14, 3, 3).unwrap(), (14, 7));
    assert_eq!(Conv2dParams::same(1).output_hw(1, 5, 1, 1).unwrap(), (1, 5));
    assert_eq!(pads(3, 2, 0, 1, 0).output_hw(7, 5, 4, 2).unwrap(), (2, 2));
}

// ------------------------------------------------------------ determinism

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// Same inputs give the same bits: twice in a row, and on 1, 3 and the
/// global pool's threads (the weight gradient sums per-slot partials).
#[test]
fn outputs_and_gradients_are_bit_identical() {
    for (hw, k, p) in [(28, 3, Conv2dParams::same(3)), (6, 3, Conv2dParams::down2()), (10, 1, Conv2dParams::same(1))] {
        let c = Case { n: 41, ci: 7, co: 13, h: hw, w: hw, kh: k, kw: k, p, seed: 9 };
        let (x, w, b, r) = c.data();
        let run = || {
            (
                fwd(t32, &c, &x, &w, Some(&b)),
                bwd_data(t32, &c, &r, &w),
                bwd_weight(t32, &c, &r, &x),
                bwd_bias(t32, &c, &r),
            )
        };
        let bits = |v: &(Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)| {
            [&v.0, &v.1, &v.2, &v.3].map(|t| t.iter().map(|f| f.to_bits()).collect::<Vec<u64>>())
        };
        let first = bits(&run());
        assert!(first == bits(&run()), "second run differs ({c:?})");
        assert!(first == bits(&in_pool(1, run)), "1-thread pool differs ({c:?})");
        assert!(first == bits(&in_pool(3, run)), "3-thread pool differs ({c:?})");
    }
}

// ------------------------------------------------------------ error cases

#[test]
fn invalid_shapes_and_params_are_errors() {
    let x = t32(&[0.0; 2 * 3 * 5 * 5], &[2, 3, 5, 5]);
    let w = t32(&[0.0; 4 * 3 * 3 * 3], &[4, 3, 3, 3]);
    let dy = t32(&[0.0; 2 * 4 * 5 * 5], &[2, 4, 5, 5]);
    let s3 = Conv2dParams::same(3);
    let err = |r: diffuse_tensor::Result<Tensor>| r.expect_err("expected an error").to_string();

    // Forward: ranks, channels, bias, kernel size, stride, dtype.
    assert!(err(ops::conv2d_forward(&t32(&[0.0; 75], &[3, 5, 5]), &w, None, &s3)).contains("rank-4"));
    assert!(err(ops::conv2d_forward(&x, &t32(&[0.0; 36], &[4, 3, 3]), None, &s3)).contains("rank-4"));
    let w_bad_ci = t32(&[0.0; 4 * 2 * 9], &[4, 2, 3, 3]);
    assert!(err(ops::conv2d_forward(&x, &w_bad_ci, None, &s3)).contains("input channels"));
    assert!(err(ops::conv2d_forward(&x, &w, Some(&t32(&[0.0; 3], &[3])), &s3)).contains("bias"));
    assert!(err(ops::conv2d_forward(&x, &w, Some(&t32(&[0.0; 4], &[1, 4])), &s3)).contains("bias"));
    let w8 = t32(&[0.0; 4 * 3 * 64], &[4, 3, 8, 8]);
    assert!(err(ops::conv2d_forward(&x, &w8, None, &s3)).contains("larger than the padded input"));
    assert!(err(ops::conv2d_forward(&x, &w, None, &pads(0, 1, 1, 1, 1))).contains("stride"));
    assert!(err(ops::conv2d_forward(&x, &t64(&[0.0; 108], &[4, 3, 3, 3]), None, &s3)).contains("dtype"));
    assert!(Conv2dParams::same(3).output_hw(4, 4, 0, 3).is_err());
    assert!(Conv2dParams::down2().output_hw(1, 8, 3, 3).is_err());
    assert!(pads(1, usize::MAX, 1, 0, 0).output_hw(4, 4, 3, 3).is_err());

    // Backward data: dy shape, x_shape rank and channels.
    let xs = Shape::new([2, 3, 5, 5]);
    assert!(ops::conv2d_backward_data(&dy, &w, &xs, &s3).is_ok());
    assert!(err(ops::conv2d_backward_data(&dy, &w, &xs, &Conv2dParams::down2())).contains("shape mismatch"));
    assert!(err(ops::conv2d_backward_data(&dy, &w, &Shape::new([2, 3, 5]), &s3)).contains("rank-4"));
    assert!(err(ops::conv2d_backward_data(&dy, &w, &Shape::new([2, 2, 5, 5]), &s3)).contains("input channels"));
    assert!(ops::conv2d_backward_data(&dy, &w, &Shape::new([usize::MAX, 3, 5, 5]), &s3).is_err());

    // Backward weight: dy shape, w_shape.
    assert!(ops::conv2d_backward_weight(&dy, &x, w.shape(), &s3).is_ok());
    assert!(err(ops::conv2d_backward_weight(&dy, &x, &Shape::new([5, 3, 3, 3]), &s3)).contains("shape mismatch"));
    assert!(err(ops::conv2d_backward_weight(&dy, &x, &Shape::new([4, 3, 3]), &s3)).contains("rank-4"));
    assert!(err(ops::conv2d_backward_weight(&dy, &x, &Shape::new([4, 3, 9, 9]), &s3)).contains("larger"));

    // Backward bias: rank.
    assert!(err(ops::conv2d_backward_bias(&t32(&[0.0; 8], &[2, 4]))).contains("rank-4"));
}

/// Found by CI's proptest run: a kernel tap that only ever sees the right
/// padding (kw 4 over a 2-wide input padded by 2) made col2im slice past the
/// row. Backward data must return the adjoint, not panic.
#[test]
fn taps_that_only_see_padding_are_handled() {
    let p = ops::Conv2dParams { stride: 1, pad_top: 0, pad_bottom: 1, pad_left: 0, pad_right: 2 };
    let mut rng = TestRng::new(9);
    let (x, w) = (rng.vec(2), rng.vec(4));
    let xt = t64(&x, &[1, 1, 1, 2]);
    let wt = t64(&w, &[1, 1, 1, 4]);
    let y = ops::conv2d_forward(&xt, &wt, None, &p).unwrap();
    let r = rng.vec(y.numel());
    let rt = t64(&r, y.dims());
    let dx = ops::conv2d_backward_data(&rt, &wt, xt.shape(), &p).unwrap();
    let dw = ops::conv2d_backward_weight(&rt, &xt, wt.shape(), &p).unwrap();
    let lhs = dot(&v64(&y), &r);
    assert!((lhs - dot(&x, &v64(&dx))).abs() < 1e-12);
    assert!((lhs - dot(&w, &v64(&dw))).abs() < 1e-12);
}

// ------------------------------------- every device against the CPU reference

/// Tolerance of a device's result against the CPU reference (relative, whole tensor).
const DEVICE_TOL: f64 = 1e-5;

/// One per-device case: the U-Net's three kinds at awkward sizes (batch 1
/// and 3, channels 3/7/13 and one past a 64-channel tile, odd and even H, W;
/// the weight gradient with one split and many).
struct DeviceCase {
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    k: usize,
    p: Conv2dParams,
    kind: &'static str,
}

fn device_cases() -> Vec<DeviceCase> {
    let s3 = Conv2dParams::same(3);
    let s1 = Conv2dParams::same(1);
    let d2 = Conv2dParams::down2();
    let c = |n, ci, co, h, w, k, p, kind| DeviceCase { n, ci, co, h, w, k, p, kind };
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

fn conv2d_forward_and_backward(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    let mut r = Report::new("conv", dut);
    let mut rng = TensorRng::new(11);
    for c in device_cases() {
        let name = format!("{} N{} Ci{} Co{} {}x{}", c.kind, c.n, c.ci, c.co, c.h, c.w);
        let x = rng.tensor(&[c.n, c.ci, c.h, c.w]);
        let w = rng.tensor(&[c.co, c.ci, c.k, c.k]);
        let b = rng.tensor(&[c.co]);
        let (xg, wg, bg) = (on(&x, dev), on(&w, dev), on(&b, dev));

        let y = ops::conv2d_forward(&x, &w, Some(&b), &c.p).unwrap();
        let yg = ops::conv2d_forward(&xg, &wg, Some(&bg), &c.p).unwrap();
        r.check("conv2d_forward (bias)", &name, &yg, &y, DEVICE_TOL);
        let y0 = ops::conv2d_forward(&x, &w, None, &c.p).unwrap();
        let y0g = ops::conv2d_forward(&xg, &wg, None, &c.p).unwrap();
        r.check("conv2d_forward (no bias)", &name, &y0g, &y0, DEVICE_TOL);

        let dy = rng.tensor(y.dims());
        let dyg = on(&dy, dev);
        let xs: Shape = x.shape().clone();
        let dx = ops::conv2d_backward_data(&dy, &w, &xs, &c.p).unwrap();
        let dxg = ops::conv2d_backward_data(&dyg, &wg, &xs, &c.p).unwrap();
        r.check("conv2d_backward_data", &name, &dxg, &dx, DEVICE_TOL);
        let dw = ops::conv2d_backward_weight(&dy, &x, w.shape(), &c.p).unwrap();
        let dwg = ops::conv2d_backward_weight(&dyg, &xg, w.shape(), &c.p).unwrap();
        r.check("conv2d_backward_weight", &name, &dwg, &dw, DEVICE_TOL);
        let db = ops::conv2d_backward_bias(&dy).unwrap();
        let dbg = ops::conv2d_backward_bias(&dyg).unwrap();
        r.check("conv2d_backward_bias", &name, &dbg, &db, DEVICE_TOL);
    }
}

per_device!(
    conv2d_forward_and_backward,
    conv2d_forward_and_backward_cpu,
    conv2d_forward_and_backward_emu,
    conv2d_forward_and_backward_cuda
);

fn conv2d_checks_shapes_and_devices_before_dispatch(dut: &DeviceUnderTest) {
    let mut rng = TensorRng::new(12);
    let dev = &dut.device;
    let x = on(&rng.tensor(&[1, 3, 5, 5]), dev);
    let w_bad = on(&rng.tensor(&[4, 2, 3, 3]), dev);
    let p = Conv2dParams::same(3);
    assert!(ops::conv2d_forward(&x, &w_bad, None, &p).is_err(), "channel mismatch on {}", dut.label);
    let w_elsewhere = on(&rng.tensor(&[4, 3, 3, 3]), &dut.other());
    let e = ops::conv2d_forward(&x, &w_elsewhere, None, &p).unwrap_err().to_string();
    assert!(e.contains("different devices"), "mixed devices on {}: {e}", dut.label);
}

per_device!(
    conv2d_checks_shapes_and_devices_before_dispatch,
    conv2d_checks_shapes_and_devices_before_dispatch_cpu,
    conv2d_checks_shapes_and_devices_before_dispatch_emu,
    conv2d_checks_shapes_and_devices_before_dispatch_cuda
);

// ------------------------------------------------- the fused epilogue

/// `conv2d_forward_fused` is the separate ops (conv with bias, then
/// `add_channel_bias`, then `add`) bit for bit, with every combination of
/// adds, on awkward shapes: several images per gemm (small planes), one per
/// gemm (28x28), stride 2, 1x1, f32 and f64; and on a device as on the CPU.
fn fused_epilogue_is_the_separate_ops(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    let mut rng = TensorRng::new(13);
    let cases = [
        (5, 3, 7, 5, 3, Conv2dParams::same(3)),
        (3, 7, 5, 28, 3, Conv2dParams::same(3)),
        (4, 6, 9, 9, 3, Conv2dParams::down2()),
        (3, 11, 4, 7, 1, Conv2dParams::same(1)),
    ];
    for (n, ci, co, hw, k, p) in cases {
        let x = on(&rng.tensor(&[n, ci, hw, hw]), dev);
        let w = on(&rng.tensor(&[co, ci, k, k]), dev);
        let b = on(&rng.tensor(&[co]), dev);
        let y = ops::conv2d_forward(&x, &w, Some(&b), &p).unwrap();
        let sb = on(&rng.tensor(&[n, co]), dev);
        let res = on(&rng.tensor(y.dims()), dev);
        for (with_bias, with_sb, with_res) in
            [(true, true, true), (true, true, false), (true, false, true), (false, true, true), (false, false, false)]
        {
            let bias = with_bias.then_some(&b);
            let mut want = ops::conv2d_forward(&x, &w, bias, &p).unwrap();
            if with_sb {
                want = ops::add_channel_bias(&want, &sb).unwrap();
            }
            if with_res {
                want = ops::add(&res, &want).unwrap();
            }
            let epi = ops::ConvEpilogue { sample_bias: with_sb.then_some(&sb), residual: with_res.then_some(&res) };
            let got = ops::conv2d_forward_fused(&x, &w, bias, &p, Precision::Fp32, epi).unwrap();
            let what = format!(
                "N{n} Ci{ci} Co{co} {hw}x{hw} k{k} bias {with_bias} sample bias {with_sb} residual {with_res} on {}",
                dut.label
            );
            assert_eq!(got.dims(), want.dims(), "{what}");
            assert_eq!(f32_bits(&got), f32_bits(&want), "{what}: fused differs from the separate ops");
        }
        let e = ops::conv2d_forward_fused(
            &x,
            &w,
            Some(&b),
            &p,
            Precision::Fp32,
            ops::ConvEpilogue { sample_bias: Some(&b), residual: None },
        );
        assert!(e.unwrap_err().to_string().contains(&format!("[{n}, {co}]")), "sample bias shape on {}", dut.label);
        let wrong = on(&rng.tensor(&[n, co, y.dims()[2] + 1, y.dims()[3]]), dev);
        let e = ops::conv2d_forward_fused(
            &x,
            &w,
            Some(&b),
            &p,
            Precision::Fp32,
            ops::ConvEpilogue { sample_bias: None, residual: Some(&wrong) },
        );
        assert!(e.is_err(), "a residual of the wrong shape is an error on {}", dut.label);
    }
    // f64 on the CPU: the same identity.
    let c = Case { n: 3, ci: 5, co: 4, h: 6, w: 7, kh: 3, kw: 3, p: Conv2dParams::same(3), seed: 5 };
    let (x, w, b, r) = c.data();
    let (xt, wt, bt, rt) = (t64(&x, &c.x_dims()), t64(&w, &c.w_dims()), t64(&b, &[c.co]), t64(&r, &c.y_dims()));
    let sb = t64(&r[..c.n * c.co], &[c.n, c.co]);
    let want =
        ops::add(&rt, &ops::add_channel_bias(&ops::conv2d_forward(&xt, &wt, Some(&bt), &c.p).unwrap(), &sb).unwrap())
            .unwrap();
    let epi = ops::ConvEpilogue { sample_bias: Some(&sb), residual: Some(&rt) };
    let got = ops::conv2d_forward_fused(&xt, &wt, Some(&bt), &c.p, Precision::Fp32, epi).unwrap();
    let to_bits = |t: &Tensor| v64(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(to_bits(&got), to_bits(&want), "f64 fused differs from the separate ops");
}

/// The bits of an f32 tensor (read back from any device).
fn f32_bits(t: &Tensor) -> Vec<u32> {
    v64(t).iter().map(|&v| (v as f32).to_bits()).collect()
}

per_device!(
    fused_epilogue_is_the_separate_ops,
    fused_epilogue_is_the_separate_ops_cpu,
    fused_epilogue_is_the_separate_ops_emu,
    fused_epilogue_is_the_separate_ops_cuda
);

// ----------------------------------------- tile shapes give the same bits

/// The GPU storage of a tensor on a GPU device.
fn gpu(t: &Tensor) -> &diffuse_tensor::gpu::GpuStorage {
    match t.storage() {
        diffuse_tensor::Storage::Gpu(s) => s,
        diffuse_tensor::Storage::Cpu(_) => panic!("expected a GPU tensor"),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Each GEMM pass of the conv in all three tile shapes (64x64, 32x128,
/// 4x256), whichever the launch would pick: the outputs are bit-identical
/// across shapes and within the CPU bound. Sizes: conv_out's 1 and 3 output
/// channels from 32, conv_in's 3 input channels, 32-channel layers, a
/// channel count past one narrow tile, odd planes, stride 2, asymmetric pads.
fn conv2d_tile_shapes_agree(dut: &DeviceUnderTest) {
    use diffuse_tensor::geom::ConvGeom;
    use diffuse_tensor::gpu::launch::conv2d::{self as lc, ConvTile};
    let diffuse_tensor::Device::Gpu(dev) = &dut.device else {
        log("conv tile shapes: the CPU has no tiles (nothing to compare)");
        return;
    };
    let (s3, s1, d2) = (Conv2dParams::same(3), Conv2dParams::same(1), Conv2dParams::down2());
    let cases = [
        (3, 32, 1, 9, 7, 3, s3),
        (2, 32, 3, 7, 10, 3, s3),
        (1, 3, 32, 9, 9, 3, s3),
        (2, 1, 5, 6, 7, 3, d2),
        (2, 32, 32, 11, 5, 3, d2),
        (1, 13, 70, 5, 5, 1, s1),
        (3, 32, 64, 5, 7, 1, s1),
        (2, 5, 4, 7, 6, 3, pads(2, 2, 1, 0, 2)),
    ];
    let mut rng = TensorRng::new(21);
    let mut worst = [0.0f64; 3];
    for (n, ci, co, h, w, k, p) in cases {
        let (ho, wo) = p.output_hw(h, w, k, k).unwrap();
        let g = ConvGeom {
            n,
            ci,
            h,
            w,
            co,
            kh: k,
            kw: k,
            stride: p.stride,
            pad_top: p.pad_top,
            pad_left: p.pad_left,
            ho,
            wo,
        };
        let name = format!("N{n} Ci{ci} Co{co} {h}x{w} k{k} {p:?}");
        let (x, wt, b, dy) =
            (rng.tensor(&[n, ci, h, w]), rng.tensor(&[co, ci, k, k]), rng.tensor(&[co]), rng.tensor(&[n, co, ho, wo]));
        let want = [
            ops::conv2d_forward(&x, &wt, Some(&b), &p).unwrap(),
            ops::conv2d_backward_data(&dy, &wt, x.shape(), &p).unwrap(),
            ops::conv2d_backward_weight(&dy, &x, wt.shape(), &p).unwrap(),
        ]
        .map(|t| t.to_vec_f32().unwrap());
        let (xg, wg, bg, dyg) = (on(&x, &dut.device), on(&wt, &dut.device), on(&b, &dut.device), on(&dy, &dut.device));
        let mut first: Option<[Vec<u32>; 3]> = None;
        for tile in ConvTile::ALL {
            let got = [
                lc::conv2d_forward_tiled(dev, gpu(&xg), gpu(&wg), Some(gpu(&bg)), &g, tile),
                lc::conv2d_backward_data_tiled(dev, gpu(&dyg), gpu(&wg), &g, tile),
                lc::conv2d_backward_weight_tiled(dev, gpu(&dyg), gpu(&xg), &g, tile),
            ]
            .map(|r| r.unwrap().download_f32().unwrap());
            for (pass, (got, want)) in got.iter().zip(&want).enumerate() {
                let err = rel_err_floor(got, want, 0.0);
                assert!(err < DEVICE_TOL, "pass {pass} [{name}] {tile:?} on {}: relative error {err:.3e}", dut.label);
                worst[pass] = worst[pass].max(err);
            }
            let got_bits = got.each_ref().map(|v| bits(v));
            match &first {
                None => first = Some(got_bits),
                Some(f) => {
                    for pass in 0..3 {
                        assert!(
                            f[pass] == got_bits[pass],
                            "pass {pass} [{name}]: {tile:?} differs from the wide tile in bits on {}",
                            dut.label
                        );
                    }
                }
            }
        }
    }
    log(&format!(
        "conv tile shapes on {}: bit-identical across 3 shapes; worst rel err vs CPU fwd {:.2e}, data {:.2e}, weight {:.2e}",
        dut.label, worst[0], worst[1], worst[2]
    ));
}

per_device!(
    conv2d_tile_shapes_agree,
    conv2d_tile_shapes_agree_cpu,
    conv2d_tile_shapes_agree_emu,
    conv2d_tile_shapes_agree_cuda
);

/// The split bias and weight reductions give the same bits in every thread
/// order of the emulator (the per-device test holds them to the CPU bound).
#[test]
fn split_reductions_are_bit_identical_across_thread_orders() {
    use diffuse_tensor::gpu::emu::{emu_device_with_order, ThreadOrder};
    let orders = [
        ThreadOrder::Forward,
        ThreadOrder::Reverse,
        ThreadOrder::Shuffle(5),
        ThreadOrder::WarpAhead,
        ThreadOrder::WarpAheadReverse,
    ];
    let mut rng = TensorRng::new(22);
    let p = Conv2dParams::same(3);
    // 49 bias splits over one channel; 8 over 32; the weight split-K at MNIST-like sizes
    for (n, ci, co, hw) in [(64, 3, 1, 28), (16, 32, 32, 14)] {
        let (x, w) = (rng.tensor(&[n, ci, hw, hw]), rng.tensor(&[co, ci, 3, 3]));
        let dy = rng.tensor(&[n, co, hw, hw]);
        let run = |order: ThreadOrder| {
            let dev = emu_device_with_order(order).unwrap();
            let (xg, dyg) = (on(&x, &dev), on(&dy, &dev));
            let db = ops::conv2d_backward_bias(&dyg).unwrap().to_vec_f32().unwrap();
            let dw = ops::conv2d_backward_weight(&dyg, &xg, w.shape(), &p).unwrap().to_vec_f32().unwrap();
            (bits(&db), bits(&dw))
        };
        let first = run(orders[0]);
        for o in &orders[1..] {
            assert!(run(*o) == first, "N{n} Ci{ci} Co{co}: thread order {o} changes the bits");
        }
    }
}
