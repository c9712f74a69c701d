//! Single-head attention: f64 oracle (output, lse, weights), finite
//! differences, softmax and adjoint properties, determinism, error cases.

mod common;
use common::*;
use diffuse_tensor::ops;
use diffuse_tensor::Tensor;
use proptest::prelude::*;

/// An attention problem: q, k, v [b, c, n].
#[derive(Clone, Debug)]
struct Case {
    b: usize,
    c: usize,
    n: usize,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
}

impl Case {
    fn new(b: usize, c: usize, n: usize, seed: u64) -> Case {
        let mut rng = TestRng::new(seed);
        let len = b * c * n;
        // Scores spread over several units, so softmax is neither flat nor one-hot.
        Case { b, c, n, q: rng.vec_in(len, -2.0, 2.0), k: rng.vec_in(len, -2.0, 2.0), v: rng.vec(len) }
    }

    fn shape(&self) -> [usize; 3] {
        [self.b, self.c, self.n]
    }

    fn rounded(&self) -> Case {
        let r = |v: &Vec<f64>| v.iter().map(|&x| x as f32 as f64).collect();
        Case { q: r(&self.q), k: r(&self.k), v: r(&self.v), ..self.clone() }
    }

    fn forward(&self, t: fn(&[f64], &[usize]) -> Tensor, q: &[f64], k: &[f64], v: &[f64]) -> ops::AttentionOutput {
        let s = self.shape();
        ops::attention_forward(&t(q, &s), &t(k, &s), &t(v, &s)).unwrap()
    }

    fn backward64(&self, dout: &[f64]) -> ops::AttentionGrads {
        let s = self.shape();
        let (q, k, v) = (t64(&self.q, &s), t64(&self.k, &s), t64(&self.v, &s));
        let f = ops::attention_forward(&q, &k, &v).unwrap();
        ops::attention_backward(&t64(dout, &s), &q, &k, &v, &f.out, &f.lse).unwrap()
    }

    /// <out(q, k, v), r> in f64.
    fn loss(&self, q: &[f64], k: &[f64], v: &[f64], r: &[f64]) -> f64 {
        dot(&v64(&self.forward(t64, q, k, v).out), r)
    }
}

/// Naive f64 attention: (out [b, c, n], lse [b, n], p [b, n, n]).
fn oracle(cs: &Case) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (b, c, n) = (cs.b, cs.c, cs.n);
    let at = |t: &Vec<f64>, bi: usize, ci: usize, i: usize| t[(bi * c + ci) * n + i];
    let scale = 1.0 / (c as f64).sqrt();
    let mut out = vec![0.0; b * c * n];
    let mut lse = vec![0.0; b * n];
    let mut p = vec![0.0; b * n * n];
    for bi in 0..b {
        for i in 0..n {
            let s: Vec<f64> = (0..n)
                .map(|j| (0..c).map(|ci| at(&cs.q, bi, ci, i) * at(&cs.k, bi, ci, j)).sum::<f64>() * scale)
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|s| (s - m).exp()).sum();
            lse[bi * n + i] = m + z.ln();
            for j in 0..n {
                p[(bi * n + i) * n + j] = (s[j] - m).exp() / z;
            }
            for ci in 0..c {
                out[(bi * c + ci) * n + i] = (0..n).map(|j| p[(bi * n + i) * n + j] * at(&cs.v, bi, ci, j)).sum();
            }
        }
    }
    (out, lse, p)
}

/// The magnitudes that bound f32 rounding of (out, lse): out run on |v|
/// (sum_j p_ij |v_j|), and for lse the largest score run on |q|, |k| plus
/// one (ln of a sum of at most n terms in (0, 1]). A sum of signed terms may
/// cancel, lse = max + ln z included: its own size says nothing of rounding.
fn oracle_magnitudes(cs: &Case) -> (Vec<f64>, Vec<f64>) {
    let (out, _, _) = oracle(&Case { v: abs(&cs.v), ..cs.clone() });
    let (b, c, n) = (cs.b, cs.c, cs.n);
    let at = |t: &Vec<f64>, bi: usize, ci: usize, i: usize| t[(bi * c + ci) * n + i].abs();
    let scale = 1.0 / (c as f64).sqrt();
    let mut lse = vec![0.0; b * n];
    for bi in 0..b {
        for i in 0..n {
            let most = (0..n)
                .map(|j| (0..c).map(|ci| at(&cs.q, bi, ci, i) * at(&cs.k, bi, ci, j)).sum::<f64>() * scale)
                .fold(0.0, f64::max);
            lse[bi * n + i] = most + 1.0;
        }
    }
    (out, lse)
}

fn tokens() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(3), Just(7), Just(49), 1..=20usize]
}

fn case_strategy(max_b: usize, max_c: usize) -> impl Strategy<Value = Case> {
    (1..=max_b, awkward(max_c), tokens(), any::<u64>()).prop_map(|(b, c, n, s)| Case::new(b, c, n, s))
}

proptest! {
    #![proptest_config(proptest_config(64))]

    #[test]
    fn forward_f32_matches_f64_oracle(cs in case_strategy(3, 24)) {
        let cs = cs.rounded();
        let f = cs.forward(t32, &cs.q, &cs.k, &cs.v);
        let (out, lse, p) = oracle(&cs);
        let (out_mag, lse_mag) = oracle_magnitudes(&cs);
        assert_close_scaled("attention out", &v64(&f.out), &out, &out_mag, 1e-5);
        assert_close_scaled("attention lse", &v64(&f.lse), &lse, &lse_mag, 1e-5);
        let s = cs.shape();
        let w = ops::attention_weights(&t32(&cs.q, &s), &t32(&cs.k, &s)).unwrap();
        prop_assert_eq!(w.dims(), &[cs.b, cs.n, cs.n]);
        assert_close("attention weights", &v64(&w), &p, 1e-5);
    }

    #[test]
    fn backward_matches_finite_differences(cs in case_strategy(2, 7)) {
        let r = TestRng::new(!cs.q.len() as u64).vec(cs.q.len());
        let g = cs.backward64(&r);
        let h = 1e-5;
        let fq = fd_grad(&cs.q, h, |q| cs.loss(q, &cs.k, &cs.v, &r));
        let fk = fd_grad(&cs.k, h, |k| cs.loss(&cs.q, k, &cs.v, &r));
        let fv = fd_grad(&cs.v, h, |v| cs.loss(&cs.q, &cs.k, v, &r));
        if cs.n == 1 {
            // One token: the softmax is constantly 1, so dq and dk are zero up
            // to rounding (a relative error against zero means nothing).
            let max_abs = v64(&g.dq).iter().chain(&v64(&g.dk)).fold(0f64, |m, v| m.max(v.abs()));
            prop_assert!(max_abs < 1e-12, "one token: |dq|, |dk| up to {max_abs}");
        } else {
            assert_close("attention dq vs finite differences", &v64(&g.dq), &fq, 1e-6);
            assert_close("attention dk vs finite differences", &v64(&g.dk), &fk, 1e-6);
        }
        assert_close("attention dv vs finite differences", &v64(&g.dv), &fv, 1e-6);
    }

    /// out is linear in v, so <out(u), r> = <u, dv> exactly; in (q, k) the
    /// JVP by central differences matches <u, (dq, dk)>.
    #[test]
    fn backward_is_adjoint_of_forward_linearisation(cs in case_strategy(3, 16)) {
        let mut rng = TestRng::new(cs.v.len() as u64 + 1);
        let len = cs.q.len();
        let (r, uq, uk, uv) = (rng.vec(len), rng.vec(len), rng.vec(len), rng.vec(len));
        let g = cs.backward64(&r);
        let jv = cs.loss(&cs.q, &cs.k, &uv, &r);
        assert_close("<out(u), r> vs <u, dv>", &[dot(&uv, &v64(&g.dv))], &[jv], 1e-10);
        let h = 1e-5;
        let step = |a: &[f64], u: &[f64], s: f64| a.iter().zip(u).map(|(a, u)| a + s * u).collect::<Vec<_>>();
        let at = |s: f64| cs.loss(&step(&cs.q, &uq, s), &step(&cs.k, &uk, s), &cs.v, &r);
        let jqk = (at(h) - at(-h)) / (2.0 * h);
        let vjp = dot(&uq, &v64(&g.dq)) + dot(&uk, &v64(&g.dk));
        prop_assume!(cs.n > 1); // one token: both sides are zero
        assert_close("<J (uq, uk), r> vs <(uq, uk), (dq, dk)>", &[vjp], &[jqk], 1e-6);
    }

    #[test]
    fn weights_are_a_distribution_per_query(cs in case_strategy(3, 24)) {
        let s = cs.shape();
        let w = v64(&ops::attention_weights(&t32(&cs.q, &s), &t32(&cs.k, &s)).unwrap());
        for (i, row) in w.chunks(cs.n).enumerate() {
            let sum: f64 = row.iter().sum();
            prop_assert!((sum - 1.0).abs() < 1e-5, "query {i}: weights sum to {sum}");
            prop_assert!(row.iter().all(|&p| p >= 0.0), "query {i}: negative weight");
        }
    }
}

/// Scores far beyond exp's range must not overflow: the max is subtracted.
#[test]
fn large_scores_stay_finite() {
    let cs = Case::new(1, 4, 7, 3);
    let q: Vec<f64> = cs.q.iter().map(|v| v * 300.0).collect();
    let f = cs.forward(t32, &q, &cs.k, &cs.v);
    assert!(v64(&f.out).iter().chain(&v64(&f.lse)).all(|v| v.is_finite()), "non-finite attention output");
    let big = Case { q, ..cs.clone() };
    assert_close(
        "attention out, large scores",
        &v64(&big.forward(t64, &big.q, &big.k, &big.v).out),
        &oracle(&big).0,
        1e-12,
    );
}

#[test]
fn forward_and_backward_are_bit_identical_across_runs() {
    for &(b, c, n) in &[(8, 64, 49), (5, 13, 37)] {
        let cs = Case::new(b, c, n, 9);
        let dout = TestRng::new(10).vec(cs.q.len());
        let s = cs.shape();
        let run = || {
            let (q, k, v) = (t32(&cs.q, &s), t32(&cs.k, &s), t32(&cs.v, &s));
            let f = ops::attention_forward(&q, &k, &v).unwrap();
            let g = ops::attention_backward(&t32(&dout, &s), &q, &k, &v, &f.out, &f.lse).unwrap();
            [f.out, f.lse, g.dq, g.dk, g.dv]
                .iter()
                .map(|t| t.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run(), "attention B{b} C{c} N{n} is not deterministic");
    }
}

/// Every output of a forward and backward big enough to split across threads.
fn thread_check_outputs() -> Vec<Tensor> {
    let cs = Case::new(6, 16, 49, 25);
    let dout = TestRng::new(26).vec(cs.q.len());
    let s = cs.shape();
    let (q, k, v) = (t32(&cs.q, &s), t32(&cs.k, &s), t32(&cs.v, &s));
    let f = ops::attention_forward(&q, &k, &v).unwrap();
    let g = ops::attention_backward(&t32(&dout, &s), &q, &k, &v, &f.out, &f.lse).unwrap();
    vec![f.out, f.lse, g.dq, g.dk, g.dv]
}

/// Same bits with 1 and with 3 rayon threads (each run in its own process,
/// since a process's rayon pool is fixed once started).
#[test]
fn bits_do_not_depend_on_thread_count() {
    if std::env::var_os("DIFFUSE_BITS_CHILD").is_some() {
        println!("bits: {:016x}", bits_hash(&thread_check_outputs().iter().collect::<Vec<_>>()));
        return;
    }
    let name = "bits_do_not_depend_on_thread_count";
    assert_eq!(bits_in_child(name, 1), bits_in_child(name, 3));
}

#[test]
fn bad_arguments_are_errors() {
    let q = t32(&[0.5; 24], &[2, 3, 4]);
    let fwd = |k: &Tensor, v: &Tensor| ops::attention_forward(&q, k, v).map(|_| ()).unwrap_err().to_string();
    assert!(fwd(&t32(&[0.5; 24], &[2, 4, 3]), &q).contains("k shaped like q"));
    assert!(fwd(&q, &t32(&[0.5; 18], &[2, 3, 3])).contains("v shaped like q"));
    assert!(fwd(&q, &t64(&[0.5; 24], &[2, 3, 4])).contains("dtype"));
    let flat = t32(&[0.5; 24], &[6, 4]);
    assert!(ops::attention_forward(&flat, &flat, &flat).unwrap_err().to_string().contains("rank-3"));
    let empty = t32(&[], &[2, 0, 4]);
    assert!(ops::attention_forward(&empty, &empty, &empty).unwrap_err().to_string().contains("channel"));
    assert!(ops::attention_weights(&q, &t32(&[0.5; 12], &[1, 3, 4])).is_err());

    let f = ops::attention_forward(&q, &q, &q).unwrap();
    let bwd = |dout: &Tensor, out: &Tensor, lse: &Tensor| {
        ops::attention_backward(dout, &q, &q, &q, out, lse).map(|_| ()).unwrap_err().to_string()
    };
    assert!(bwd(&t32(&[0.5; 12], &[1, 3, 4]), &f.out, &f.lse).contains("dout"));
    assert!(bwd(&q, &t32(&[0.5; 12], &[2, 3, 2]), &f.lse).contains("out"));
    assert!(bwd(&q, &f.out, &t32(&[0.5; 8], &[8])).contains("lse"));
    assert!(bwd(&q, &f.out, &t32(&[0.5; 6], &[2, 3])).contains("lse"));
    assert!(bwd(&q, &f.out, &t64(&[0.5; 8], &[2, 4])).contains("dtype"));
}

// ------------------------------------- every device against the CPU reference

/// Tolerance of a device's result against the CPU reference (relative, whole tensor).
const DEVICE_TOL: f64 = 1e-5;

fn attention_forward_and_backward(dut: &DeviceUnderTest) {
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
    let dev = &dut.device;
    let mut r = Report::new("attention", dut);
    let mut rng = TensorRng::new(31);
    for (b, c, n) in cases {
        let case = format!("B{b} C{c} N{n}");
        let shape = [b, c, n];
        // scores of a few units, so softmax is neither flat nor one-hot
        let (q, k, v) = (rng.tensor_in(&shape, -2.0, 2.0), rng.tensor_in(&shape, -2.0, 2.0), rng.tensor(&shape));
        let (qg, kg, vg) = (on(&q, dev), on(&k, dev), on(&v, dev));
        let f = ops::attention_forward(&q, &k, &v).unwrap();
        let fg = ops::attention_forward(&qg, &kg, &vg).unwrap();
        r.check("attention_forward out", &case, &fg.out, &f.out, DEVICE_TOL);
        r.check("attention_forward lse", &case, &fg.lse, &f.lse, DEVICE_TOL);

        let p = ops::attention_weights(&q, &k).unwrap();
        let pg = ops::attention_weights(&qg, &kg).unwrap();
        r.check("attention_weights", &case, &pg, &p, DEVICE_TOL);

        let dout = rng.tensor(&shape);
        let doutg = on(&dout, dev);
        let g = ops::attention_backward(&dout, &q, &k, &v, &f.out, &f.lse).unwrap();
        let gg = ops::attention_backward(&doutg, &qg, &kg, &vg, &fg.out, &fg.lse).unwrap();
        r.check("attention_backward dv", &case, &gg.dv, &g.dv, DEVICE_TOL);
        // With one token the softmax is constant: dq and dk are
        // analytically zero and both devices hold rounding noise. Their
        // error is measured against the scale of the other gradients.
        let floor = if n == 1 { norm_f32(&g.dv.to_vec_f32().unwrap()) } else { 0.0 };
        r.check_floor("attention_backward dq", &case, &gg.dq, &g.dq, DEVICE_TOL, floor);
        r.check_floor("attention_backward dk", &case, &gg.dk, &g.dk, DEVICE_TOL, floor);
    }
}

per_device!(
    attention_forward_and_backward,
    attention_forward_and_backward_cpu,
    attention_forward_and_backward_emu,
    attention_forward_and_backward_cuda
);

// ------------------------------- consumer GPUs: less shared memory a block

/// The attention of the cifar10 preset (crates/unet/src/config.rs: ch 128 x
/// ch_mult 2 = 256 channels at 16x16, and the middle block at 4x4) on
/// emulated devices that grant 99 KiB (sm_86/89/120) and 64 KiB (sm_75) of
/// shared memory a block. The emulator rejects any launch above its limit,
/// so a passing run means the tiles fit; results match the CPU reference
/// and are bit-identical to the default device's, since the tile does not
/// change what is summed in which order.
#[test]
fn cifar10_attention_fits_consumer_gpu_shared_memory() {
    use diffuse_tensor::gpu::emu::emu_device_with_max_shared;
    use diffuse_tensor::gpu::launch::attention::{backward_tile, forward_tile, shared_bytes, smem_budget};
    const C: usize = 256;
    // (device limit, expected forward tile, expected backward tile)
    let devices = [(227 * 1024u32, 32, 16), (99 * 1024, 16, 16), (64 * 1024, 8, 8)];
    for &(limit, bq, t) in &devices {
        let budget = smem_budget(limit);
        assert_eq!((forward_tile(C, budget), backward_tile(C, budget)), (Some(bq), Some(t)), "tiles at {limit} B");
        let (f, dkdv, dq) = shared_bytes(C, bq, t);
        assert!(f <= limit as usize && dkdv <= limit as usize && dq <= limit as usize, "{limit}: {f} {dkdv} {dq}");
    }
    // the figure: C = 256 at the old fixed tile asks 102,912 B, over 99 KiB
    assert_eq!(shared_bytes(C, 32, 16).0, 102_912);

    let mut rng = TensorRng::new(77);
    for (b, n) in [(1usize, 256usize), (2, 16)] {
        let shape = [b, C, n];
        let case = format!("cifar10 B{b} C{C} N{n}");
        let (q, k, v) = (rng.tensor_in(&shape, -2.0, 2.0), rng.tensor_in(&shape, -2.0, 2.0), rng.tensor(&shape));
        let dout = rng.tensor(&shape);
        let f = ops::attention_forward(&q, &k, &v).unwrap();
        let g = ops::attention_backward(&dout, &q, &k, &v, &f.out, &f.lse).unwrap();
        let mut first: Option<Vec<Vec<u32>>> = None;
        for &(limit, _, _) in &devices {
            let device = emu_device_with_max_shared(limit).unwrap();
            let dut =
                DeviceUnderTest { label: format!("emu ({} KiB shared)", limit / 1024), device, backend: Backend::Emu };
            let dev = &dut.device;
            let mut r = Report::new("attention at a shared-memory limit", &dut);
            let (qg, kg, vg) = (on(&q, dev), on(&k, dev), on(&v, dev));
            let fg = ops::attention_forward(&qg, &kg, &vg).unwrap();
            let gg = ops::attention_backward(&on(&dout, dev), &qg, &kg, &vg, &fg.out, &fg.lse).unwrap();
            r.check("attention_forward out", &case, &fg.out, &f.out, DEVICE_TOL);
            r.check("attention_forward lse", &case, &fg.lse, &f.lse, DEVICE_TOL);
            r.check("attention_backward dq", &case, &gg.dq, &g.dq, DEVICE_TOL);
            r.check("attention_backward dk", &case, &gg.dk, &g.dk, DEVICE_TOL);
            r.check("attention_backward dv", &case, &gg.dv, &g.dv, DEVICE_TOL);
            let bits: Vec<Vec<u32>> = [&fg.out, &fg.lse, &gg.dq, &gg.dk, &gg.dv]
                .iter()
                .map(|t| t.to_vec_f32().unwrap().iter().map(|x| x.to_bits()).collect())
                .collect();
            match &first {
                None => first = Some(bits),
                Some(want) => assert!(bits == *want, "{case}: {limit} B of shared memory changed the bits"),
            }
        }
    }
}

/// Channels too many for a device's shared memory are an error naming the
/// budget, never a launch the device refuses.
#[test]
fn too_many_channels_for_the_device_is_an_error() {
    let device = diffuse_tensor::gpu::emu::emu_device_with_max_shared(64 * 1024).unwrap();
    let shape = [1, 2048, 3];
    let q = on(&TensorRng::new(5).tensor(&shape), &device);
    let e = ops::attention_forward(&q, &q, &q).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("2048 channels do not fit") && e.contains("65536 bytes"), "{e}");
}
