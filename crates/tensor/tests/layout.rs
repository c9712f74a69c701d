//! Upsampling, channel concat/split and the channel bias: f64 oracles,
//! finite differences, adjoint identities, determinism and error cases.

mod common;
use common::*;
use diffuse_tensor::{ops, Tensor};
use proptest::prelude::*;

fn round32(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| x as f32 as f64).collect()
}

// ---- naive f64 oracles: plain index arithmetic on [n][c][h][w] ----

fn oracle_upsample(x: &[f64], n: usize, c: usize, h: usize, w: usize) -> Vec<f64> {
    let mut y = vec![0.0; n * c * 4 * h * w];
    for p in 0..n * c {
        for i in 0..2 * h {
            for j in 0..2 * w {
                y[(p * 2 * h + i) * 2 * w + j] = x[(p * h + i / 2) * w + j / 2];
            }
        }
    }
    y
}

fn oracle_concat(a: &[f64], ca: usize, b: &[f64], cb: usize, n: usize, hw: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for s in 0..n {
        for c in 0..ca {
            for k in 0..hw {
                out.push(a[(s * ca + c) * hw + k]);
            }
        }
        for c in 0..cb {
            for k in 0..hw {
                out.push(b[(s * cb + c) * hw + k]);
            }
        }
    }
    out
}

fn oracle_channel_bias(x: &[f64], bias: &[f64], n: usize, c: usize, hw: usize) -> Vec<f64> {
    let mut y = x.to_vec();
    for s in 0..n {
        for ch in 0..c {
            for k in 0..hw {
                y[(s * c + ch) * hw + k] += bias[s * c + ch];
            }
        }
    }
    y
}

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn upsample_matches_oracle_fd_and_adjoint(
        n in awkward(3), c in awkward(13), h in awkward(7), w in awkward(7), seed in any::<u64>()
    ) {
        let mut rng = TestRng::new(seed);
        let x = round32(rng.vec(n * c * h * w));
        let y = ops::upsample_nearest2x_forward(&t32(&x, &[n, c, h, w])).unwrap();
        prop_assert_eq!(y.dims(), &[n, c, 2 * h, 2 * w]);
        assert_close("upsample forward", &v64(&y), &oracle_upsample(&x, n, c, h, w), 1e-5);

        // backward: gradient of <up(x), r> by finite differences, and the adjoint identity
        let r = rng.vec(n * c * 4 * h * w);
        let dx = v64(&ops::upsample_nearest2x_backward(&t64(&r, &[n, c, 2 * h, 2 * w])).unwrap());
        let fd = fd_grad(&x, 1e-5, |x| dot(&up64(x, [n, c, h, w]), &r));
        assert_close("upsample backward vs fd", &dx, &fd, 1e-6);
        let ux = up64(&x, [n, c, h, w]);
        let (lhs, rhs) = (dot(&ux, &r), dot(&x, &dx));
        prop_assert!((lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()), "<Ux,r> {} vs <x,U^T r> {}", lhs, rhs);
    }

    #[test]
    fn concat_split_match_oracle_fd_and_adjoint(
        n in awkward(3), ca in awkward(13), cb in awkward(13), h in awkward(7), w in awkward(7), seed in any::<u64>()
    ) {
        let mut rng = TestRng::new(seed);
        let hw = h * w;
        let (a, b) = (round32(rng.vec(n * ca * hw)), round32(rng.vec(n * cb * hw)));
        let cat = ops::concat_channels(&t32(&a, &[n, ca, h, w]), &t32(&b, &[n, cb, h, w])).unwrap();
        prop_assert_eq!(cat.dims(), &[n, ca + cb, h, w]);
        let want = oracle_concat(&a, ca, &b, cb, n, hw);
        assert_close("concat forward", &v64(&cat), &want, 1e-5);

        let (sa, sb) = ops::split_channels(&t32(&want, &[n, ca + cb, h, w]), ca).unwrap();
        prop_assert_eq!(sa.dims(), &[n, ca, h, w]);
        prop_assert_eq!(sb.dims(), &[n, cb, h, w]);
        assert_close("split a", &v64(&sa), &a, 1e-5);
        assert_close("split b", &v64(&sb), &b, 1e-5);

        // concat's backward is split; split's backward is concat
        let r = rng.vec(n * (ca + cb) * hw);
        let (ga, gb) = ops::split_channels(&t64(&r, &[n, ca + cb, h, w]), ca).unwrap();
        let cat64 = |a: &[f64], b: &[f64]| v64(&ops::concat_channels(&t64(a, &[n, ca, h, w]), &t64(b, &[n, cb, h, w])).unwrap());
        assert_close("concat d/da", &v64(&ga), &fd_grad(&a, 1e-5, |a| dot(&cat64(a, &b), &r)), 1e-6);
        assert_close("concat d/db", &v64(&gb), &fd_grad(&b, 1e-5, |b| dot(&cat64(&a, b), &r)), 1e-6);
        let (ra, rb) = (rng.vec(n * ca * hw), rng.vec(n * cb * hw));
        let split_dot = |d: &[f64]| {
            let (x, y) = ops::split_channels(&t64(d, &[n, ca + cb, h, w]), ca).unwrap();
            dot(&v64(&x), &ra) + dot(&v64(&y), &rb)
        };
        assert_close("split backward", &cat64(&ra, &rb), &fd_grad(&r, 1e-5, split_dot), 1e-6);

        // adjoint: <concat(a, b), r> = <a, split(r).0> + <b, split(r).1>
        let lhs = dot(&cat64(&a, &b), &r);
        let rhs = dot(&a, &v64(&ga)) + dot(&b, &v64(&gb));
        prop_assert!((lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()));
    }

    #[test]
    fn channel_bias_matches_oracle_fd_and_adjoint(
        n in awkward(3), c in awkward(13), h in awkward(7), w in awkward(7), seed in any::<u64>()
    ) {
        let mut rng = TestRng::new(seed);
        let hw = h * w;
        let (x, bias) = (round32(rng.vec(n * c * hw)), round32(rng.vec(n * c)));
        let y = ops::add_channel_bias(&t32(&x, &[n, c, h, w]), &t32(&bias, &[n, c])).unwrap();
        assert_close("channel bias forward", &v64(&y), &oracle_channel_bias(&x, &bias, n, c, hw), 1e-5);

        let r = rng.vec(n * c * hw);
        let db = ops::channel_bias_backward(&t64(&r, &[n, c, h, w])).unwrap();
        prop_assert_eq!(db.dims(), &[n, c]);
        let f = |bias: &[f64]| dot(&v64(&ops::add_channel_bias(&t64(&x, &[n, c, h, w]), &t64(bias, &[n, c])).unwrap()), &r);
        assert_close("channel bias backward vs fd", &v64(&db), &fd_grad(&bias, 1e-5, f), 1e-6);

        // adjoint of the linear map bias -> bias broadcast over H, W
        let zeros = vec![0.0; n * c * hw];
        let jb = v64(&ops::add_channel_bias(&t64(&zeros, &[n, c, h, w]), &t64(&bias, &[n, c])).unwrap());
        let (lhs, rhs) = (dot(&jb, &r), dot(&bias, &v64(&db)));
        prop_assert!((lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()));
    }
}

/// Upsampling through the op in f64 (for finite differences of the op itself).
fn up64(x: &[f64], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
    v64(&ops::upsample_nearest2x_forward(&t64(x, &[n, c, h, w])).unwrap())
}

#[test]
fn bias_gradient_and_upsample_backward_are_bit_identical_across_thread_counts() {
    let (n, c, h, w) = (5, 13, 31, 29);
    let dy = t32(&TestRng::new(5).vec(n * c * 4 * h * w), &[n, c, 2 * h, 2 * w]);
    let run = || {
        let db = ops::channel_bias_backward(&dy).unwrap().to_vec_f32().unwrap();
        let dx = ops::upsample_nearest2x_backward(&dy).unwrap().to_vec_f32().unwrap();
        (db, dx)
    };
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    assert_eq!(run(), run());
    assert_eq!(run(), one_thread);
}

#[test]
fn zero_sized_dims_do_not_panic() {
    let x = t32(&[], &[2, 3, 0, 4]);
    assert_eq!(ops::upsample_nearest2x_forward(&x).unwrap().dims(), &[2, 3, 0, 8]);
    assert_eq!(ops::upsample_nearest2x_backward(&x).unwrap().dims(), &[2, 3, 0, 2]);
    assert_eq!(ops::channel_bias_backward(&x).unwrap().to_vec_f64().unwrap(), vec![0.0; 6]);
    let d = t32(&[1.0, 2.0, 3.0, 4.0], &[2, 2, 1, 1]);
    let (a, b) = ops::split_channels(&d, 0).unwrap();
    assert_eq!((a.dims(), b.dims()), (&[2, 0, 1, 1][..], &[2, 2, 1, 1][..]));
    assert_eq!(v64(&ops::concat_channels(&a, &b).unwrap()), v64(&d));
}

#[test]
fn bad_shapes_and_dtypes_are_errors() {
    let x = t32(&[0.0; 2 * 3 * 4 * 4], &[2, 3, 4, 4]);
    let rank3 = t32(&[0.0; 12], &[3, 4, 1]);
    assert!(ops::upsample_nearest2x_forward(&rank3).is_err());
    assert!(ops::upsample_nearest2x_backward(&t32(&[0.0; 15], &[1, 1, 3, 5])).is_err());
    assert!(ops::upsample_nearest2x_backward(&rank3).is_err());
    // concat: N, H or W differ; dtype differs
    assert!(ops::concat_channels(&x, &t32(&[0.0; 3 * 16], &[1, 3, 4, 4])).is_err());
    assert!(ops::concat_channels(&x, &t32(&[0.0; 2 * 3 * 12], &[2, 3, 4, 3])).is_err());
    assert!(ops::concat_channels(&x, &t64(&[0.0; 2 * 3 * 16], &[2, 3, 4, 4])).is_err());
    assert!(ops::split_channels(&x, 4).unwrap_err().to_string().contains("split_channels"));
    // bias must be [N, C] of the same dtype
    assert!(ops::add_channel_bias(&x, &t32(&[0.0; 3], &[3])).is_err());
    assert!(ops::add_channel_bias(&x, &t32(&[0.0; 6], &[3, 2])).is_err());
    assert!(ops::add_channel_bias(&x, &t64(&[0.0; 6], &[2, 3])).is_err());
    assert!(ops::channel_bias_backward(&rank3).is_err());
}

#[test]
fn f64_layout_ops_are_exact() {
    let x: Vec<f64> = TestRng::new(9).vec(3 * 5 * 7);
    let t = Tensor::from_vec(x.clone(), [1, 3, 5, 7]).unwrap();
    assert_eq!(v64(&ops::upsample_nearest2x_forward(&t).unwrap()), oracle_upsample(&x, 1, 3, 5, 7));
}

// ------------------------------------- every device against the CPU reference

/// Tolerance of a device's result against the CPU reference (relative, whole tensor).
const DEVICE_TOL: f64 = 1e-5;

fn layout_ops(dut: &DeviceUnderTest) {
    // (N, C, H, W): odd sizes, planes fewer and more than the 8 planes of a
    // bias-gradient block, planes longer than a warp
    let shapes = [[1, 3, 1, 1], [3, 7, 5, 3], [1, 13, 7, 9], [3, 3, 9, 11], [2, 9, 1, 40]];
    let dev = &dut.device;
    let mut r = Report::new("layout", dut).exact_on(dut, &[Backend::Emu, Backend::Cuda]);
    let mut rng = TensorRng::new(71);
    for [n, c, h, w] in shapes {
        let case = format!("[{n}, {c}, {h}, {w}]");
        let x = rng.tensor(&[n, c, h, w]);
        let xg = on(&x, dev);
        r.check(
            "upsample_nearest2x_forward",
            &case,
            &ops::upsample_nearest2x_forward(&xg).unwrap(),
            &ops::upsample_nearest2x_forward(&x).unwrap(),
            DEVICE_TOL,
        );
        let dy = rng.tensor(&[n, c, 2 * h, 2 * w]);
        r.check(
            "upsample_nearest2x_backward",
            &case,
            &ops::upsample_nearest2x_backward(&on(&dy, dev)).unwrap(),
            &ops::upsample_nearest2x_backward(&dy).unwrap(),
            DEVICE_TOL,
        );

        let cb = 7;
        let b = rng.tensor(&[n, cb, h, w]);
        let bg = on(&b, dev);
        let cat = ops::concat_channels(&x, &b).unwrap();
        let catg = ops::concat_channels(&xg, &bg).unwrap();
        r.check("concat_channels", &case, &catg, &cat, DEVICE_TOL);
        for ca in [0, c, c + 3] {
            let (s1, s2) = ops::split_channels(&cat, ca).unwrap();
            let (g1, g2) = ops::split_channels(&catg, ca).unwrap();
            let sc = format!("{case} + {cb} split at {ca}");
            r.check("split_channels", &sc, &g1, &s1, DEVICE_TOL);
            r.check("split_channels", &sc, &g2, &s2, DEVICE_TOL);
        }

        let bias = rng.tensor(&[n, c]);
        r.check(
            "add_channel_bias",
            &case,
            &ops::add_channel_bias(&xg, &on(&bias, dev)).unwrap(),
            &ops::add_channel_bias(&x, &bias).unwrap(),
            DEVICE_TOL,
        );
        // a reduction over (n, h, w) in the kernel's order, not the CPU's
        r.check_tol(
            "channel_bias_backward",
            &case,
            &ops::channel_bias_backward(&xg).unwrap(),
            &ops::channel_bias_backward(&x).unwrap(),
            DEVICE_TOL,
        );
    }
}

per_device!(layout_ops, layout_ops_cpu, layout_ops_emu, layout_ops_cuda);
