//! The tensor-core attention (kernels/attention_tc.cu, bf16 and tf32
//! inputs, f32 accumulation) against the rounding CPU oracle
//! (`cpu::reduced::attention_forward` / `attention_backward`) under bounds
//! derived here, at the U-Net's attention shapes (mnist C = 64, N = 49;
//! cifar10 C = 256, N = 256) and awkward ones; the oracle against plain
//! loops written here; and the `Precision` routing of the ops.
//!
//! ## The bounds
//!
//! Notation as in tests/tensor_core.rs: u_in the input rounding's unit
//! roundoff (bf16 2^-8, tf32 2^-11), u = 2^-24, u' = 2u (an adder that may
//! truncate), gamma_n(u') = n u' / (1 - n u'), ~ a value rounded to the
//! tensor core's input format.
//!
//! Every output of the kernels is one wmma product sum_b w~_b y~_b, summed
//! in f32 over b in order (keys for out and dq, queries for dk and dv), one
//! mma of k = ks terms at a time (bf16 16, tf32 8; zero-padded terms add
//! exactly nothing; the f32 accumulator tiles go through shared memory
//! between tiles unchanged), where y~ is a rounded input (v, dout, q, k)
//! and w~ is either a rounded input or a value the kernel computes in f32
//! and then rounds (p, ds).
//!
//! Accumulation. One mma adds ks exact products (bf16 x bf16, tf32 x tf32
//! fit f32) to the accumulator with at most ks roundings in whatever order
//! the hardware uses, so by the recursive-summation bound over its ks + 1
//! summands (Higham eq. 4.4) its error is at most
//! gamma_ks(u') (|acc| + sum_block |w~ y~|), and |acc| <= |exact partial
//! sum| + the error so far. Summed over the blocks this is the oracle's
//! `acc_err` (`reduced::wmma_dot`), taken as the smaller of it and the
//! plain gamma_n(u') sum |w~ y~| of tests/tensor_core.rs (each term passes
//! at most n additions). For long sums that cancel (scores; outputs of
//! random-sign values) the blockwise bound is several times smaller.
//!
//! The kernel's own operands. p and ds differ from the oracle's (f64, from
//! the same rounded inputs) by an amount the oracle bounds term by term:
//! - the scaled score x = scale s: the wmma sum over C within the
//!   blockwise bound above, and the product with the scale one rounding,
//!   u |x|: together dx;
//! - lse = m + log l (the forward's online softmax, tiles of 32 keys): lse
//!   is 1-Lipschitz in the max norm of the scores, so the score errors move
//!   it by at most max_j dx; l collects at most 2 T + 4 f32 roundings per
//!   term (T = ceil(N / 32) tiles: the warp sum's 5, the tile add, a rescale
//!   and an add per later tile), T expf errors (each <= 2 ulp = 4u
//!   relative, CUDA's documented maximum) and the roundings of the
//!   exponents' subtractions (u |x - m| each; the rescales' exponents
//!   telescope), so its relative error is at most
//!   gamma_{2T+4}(u) + 4u T + 2 u R (R the score range); log l adds 2 ulp,
//!   the final add u |lse|: together lse_err;
//! - p = exp(x - lse): |ln p_kernel - ln p_oracle| <= dx + lse_err (forward;
//!   the backward gets the forward's f32 lse and only dx applies), plus
//!   u |x - lse| (the subtraction) and 4u (expf), times 1.01 for the
//!   exponential's curvature: a relative interval around the oracle's p;
//! - ds = scale p (dp - D): dp a wmma sum over C (blockwise bound), D the
//!   f64 row dot rounded to f32 (u |D|), the subtraction and the two
//!   products one rounding each: an absolute interval around the oracle's ds.
//!
//! Every f32 value inside an interval [lo, hi] rounds (monotonically) to a
//! value between round(lo) and round(hi). The oracle uses round(its own
//! value), also in there; so where the interval holds no rounding boundary
//! the kernel multiplies exactly the oracle's operand, and elsewhere it is
//! off by at most round(hi) - round(lo). The oracle's `slack` is
//! sum_b (round(hi_b) - round(lo_b)) |y~_b|, and elementwise
//!
//!   (A)  |kernel - oracle| <= acc_err + slack                        (`Bounded::bound`)
//!   (L)  |lse_kernel - lse_oracle| <= lse_err.
//!
//! Can it fail? (A) is well below the effect of rounding the operands
//! (u_in each), so the unrounded oracle breaks it on a share of the outputs
//! of every pass (checked; measured in the log: bf16 52-99%, tf32 11-91%,
//! except tf32's forward output at C = 256, where the scores' bound is a
//! good part of tf32's spacing and the slack covers p's rounding: 0.2%).
//! Planted by hand once each (not kept), on the emulator: in
//! `att_tc_accumulate` the A fragment at `W + a0 * lw` instead of
//! `W + a0 * lw + b0` (every k step of a tile reads the first keys'
//! weights): out[0] -0.291 vs -0.0538, bound 6.8e-5; in `att_tc_scores` the
//! B fragment at `Y + c0 * ly` instead of `Y + c0 * ly + b0` (a wrong key
//! tile column): lse[0] 5.126 vs 4.805, bound 3.4e-5. Both failed at the
//! first shape.

mod common;
use common::*;
use diffuse_tensor::cpu::reduced::{self, accumulation_bound, Bounded};
use diffuse_tensor::geom::AttentionDims;
use diffuse_tensor::gpu::launch::attention_tc;
use diffuse_tensor::{ops, Device, Precision, Storage, Tensor};

/// (b, c, n): mnist's attention (7x7, C = 64), cifar10's (16x16, C = 256),
/// and awkward sizes (channels and tokens not multiples of 16, several key
/// tiles with a partial last one, a single token).
const SHAPES: [(usize, usize, usize); 5] = [(2, 64, 49), (1, 256, 256), (2, 48, 37), (1, 20, 70), (2, 8, 1)];

/// Test-local rounding, written from the definitions (not `Precision::round`).
fn round_here(p: Precision, x: f64) -> f64 {
    let x = x as f32;
    match p {
        Precision::Fp32 => x as f64,
        Precision::Bf16 => half::bf16::from_f32(x).to_f64(),
        Precision::Tf32 => {
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

struct Inputs {
    d: AttentionDims,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dout: Vec<f32>,
}

impl Inputs {
    fn new((b, c, n): (usize, usize, usize), seed: u64) -> Inputs {
        let mut rng = TensorRng::new(seed);
        let len = b * c * n;
        // scores spread over a few units: softmax neither flat nor one-hot
        let (q, k) = (rng.vec(len, -2.0, 2.0), rng.vec(len, -2.0, 2.0));
        Inputs { d: AttentionDims { b, c, n }, q, k, v: rng.vec(len, -1.0, 1.0), dout: rng.vec(len, -1.0, 1.0) }
    }
}

/// Plain loops: (out, lse) with q, k, v rounded and p = round(exp(x - lse))
/// (no rounding of anything for fp32).
fn naive_forward(p: Precision, x: &Inputs) -> (Vec<f64>, Vec<f64>) {
    let AttentionDims { b, c, n } = x.d;
    let sc = (c as f32).sqrt().recip() as f64;
    let r = |v: &[f32], i: usize| round_here(p, v[i] as f64);
    let (mut out, mut lse) = (vec![0.0; b * c * n], vec![0.0; b * n]);
    for bi in 0..b {
        let at = |cc: usize, t: usize| (bi * c + cc) * n + t;
        for i in 0..n {
            let s: Vec<f64> =
                (0..n).map(|j| sc * (0..c).map(|cc| r(&x.q, at(cc, i)) * r(&x.k, at(cc, j))).sum::<f64>()).collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let l = m + s.iter().map(|s| (s - m).exp()).sum::<f64>().ln();
            lse[bi * n + i] = l;
            let w: Vec<f64> = s
                .iter()
                .map(|&s| if p == Precision::Fp32 { (s - l).exp() } else { round_here(p, (s - l).exp()) })
                .collect();
            for cc in 0..c {
                out[at(cc, i)] = (0..n).map(|j| w[j] * r(&x.v, at(cc, j))).sum();
            }
        }
    }
    (out, lse)
}

/// Plain loops: (dq, dk, dv) given the forward's out and lse, p and ds
/// rounded (nothing for fp32).
fn naive_backward(p: Precision, x: &Inputs, out: &[f32], lse: &[f32]) -> [Vec<f64>; 3] {
    let AttentionDims { b, c, n } = x.d;
    let sc = (c as f32).sqrt().recip() as f64;
    let r = |v: &[f32], i: usize| round_here(p, v[i] as f64);
    let rw = |w: f64| if p == Precision::Fp32 { w } else { round_here(p, w) };
    let mut g = [vec![0.0; b * c * n], vec![0.0; b * c * n], vec![0.0; b * c * n]];
    for bi in 0..b {
        let at = |cc: usize, t: usize| (bi * c + cc) * n + t;
        for i in 0..n {
            let dd: f64 = (0..c).map(|cc| x.dout[at(cc, i)] as f64 * out[at(cc, i)] as f64).sum();
            for j in 0..n {
                let s = sc * (0..c).map(|cc| r(&x.q, at(cc, i)) * r(&x.k, at(cc, j))).sum::<f64>();
                let dp: f64 = (0..c).map(|cc| r(&x.dout, at(cc, i)) * r(&x.v, at(cc, j))).sum();
                let pe = (s - lse[bi * n + i] as f64).exp();
                let (pw, ds) = (rw(pe), rw(sc * pe * (dp - dd)));
                for cc in 0..c {
                    g[0][at(cc, i)] += ds * r(&x.k, at(cc, j));
                    g[1][at(cc, j)] += ds * r(&x.q, at(cc, i));
                    g[2][at(cc, j)] += pw * r(&x.dout, at(cc, i));
                }
            }
        }
    }
    g
}

/// The oracle's values against the loops', and its accumulation bound
/// within the plain recursive-summation one, gamma_n(u') sum |terms|.
fn assert_oracle(what: &str, o: &Bounded, want: &[f64], n: usize) {
    for (i, &w) in want.iter().enumerate() {
        let tol = 1e-12 * o.abs_sum[i].max(1e-30);
        assert!((o.value[i] - w).abs() <= tol, "{what}[{i}]: oracle {} vs loops {w}", o.value[i]);
        let plain = accumulation_bound(n, o.abs_sum[i] + o.slack[i]);
        assert!(o.acc_err[i] <= plain, "{what}[{i}]: acc_err {} > gamma_n bound {plain}", o.acc_err[i]);
    }
}

#[test]
fn attention_oracle_matches_plain_loops_and_the_f64_reference() {
    for (si, &shape) in SHAPES.iter().enumerate().filter(|(_, s)| s.1 * s.2 <= 64 * 49) {
        let x = Inputs::new(shape, 40 + si as u64);
        let d = x.d;
        for p in Precision::ALL {
            let f = reduced::attention_forward(p, d, &x.q, &x.k, &x.v);
            let (out, lse) = naive_forward(p, &x);
            assert_oracle(&format!("{p} {shape:?} out"), &f.out, &out, d.n);
            for (i, &l) in lse.iter().enumerate() {
                assert!((f.lse[i] - l).abs() <= 1e-12 * l.abs().max(1.0), "{p} {shape:?} lse[{i}]");
            }
            // the slack, a correction where an interval straddles a rounding
            // boundary, stays below the input rounding's own effect
            if p != Precision::Fp32 {
                let (slack, abs) = (f.out.slack.iter().sum::<f64>(), f.out.abs_sum.iter().sum::<f64>());
                let ratio = slack / (p.input_unit_roundoff() * abs);
                log(&format!("oracle {p} {shape:?}: total slack / (u_in sum |terms|) = {ratio:.3}"));
                assert!(ratio < 0.5, "{p} {shape:?}: slack {slack} of {abs}");
            }
            let (o32, l32): (Vec<f32>, Vec<f32>) =
                (f.out.value.iter().map(|&v| v as f32).collect(), f.lse.iter().map(|&v| v as f32).collect());
            let g = reduced::attention_backward(p, d, &x.dout, &x.q, &x.k, &x.v, &o32, &l32);
            let want = naive_backward(p, &x, &o32, &l32);
            for (name, o, w) in [("dq", &g.dq, &want[0]), ("dk", &g.dk, &want[1]), ("dv", &g.dv, &want[2])] {
                assert_oracle(&format!("{p} {shape:?} {name}"), o, w, d.n);
            }
        }
        // unrounded, the oracle is attention itself: against the f64 CPU reference
        let t64 =
            |v: &[f32]| Tensor::from_vec(v.iter().map(|&x| x as f64).collect::<Vec<f64>>(), [d.b, d.c, d.n]).unwrap();
        let (q, k, v, dout) = (t64(&x.q), t64(&x.k), t64(&x.v), t64(&x.dout));
        let f64ref = ops::attention_forward(&q, &k, &v).unwrap();
        let f = reduced::attention_forward(Precision::Fp32, d, &x.q, &x.k, &x.v);
        // (the f64 reference scales by C^-0.5 in f64, the oracle by its f32 rounding)
        assert!(rel_err(&f.out.value, &v64(&f64ref.out)) < 1e-6, "{shape:?} fp32 oracle vs f64 reference");
        let (o, l) = (f64ref.out.to_vec_f32().unwrap(), f64ref.lse.to_vec_f32().unwrap());
        let g = reduced::attention_backward(Precision::Fp32, d, &x.dout, &x.q, &x.k, &x.v, &o, &l);
        let gref = ops::attention_backward(&dout, &q, &k, &v, &f64ref.out, &f64ref.lse).unwrap();
        for (name, got, want) in [("dq", &g.dq, &gref.dq), ("dk", &g.dk, &gref.dk), ("dv", &g.dv, &gref.dv)] {
            assert!(rel_err(&got.value, &v64(want)) < 1e-5, "{shape:?} fp32 oracle {name} vs f64 reference");
        }
    }
}

fn gpu(t: &Tensor) -> &diffuse_tensor::gpu::GpuStorage {
    match t.storage() {
        Storage::Gpu(s) => s,
        Storage::Cpu(_) => panic!("expected a GPU tensor"),
    }
}

/// Worst |got - oracle| / bound (A), asserting every element is within it.
fn check(what: &str, got: &[f32], o: &Bounded) -> f64 {
    assert_eq!(got.len(), o.value.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, &v) in got.iter().enumerate() {
        let (b, err) = (o.bound(i), (v as f64 - o.value[i]).abs());
        assert!(
            err <= b,
            "{what}: element {i}: {v} vs oracle {} (|err| {err:.3e} > bound {b:.3e}, slack {:.3e})",
            o.value[i],
            o.slack[i]
        );
        if b > 0.0 {
            worst = worst.max(err / b);
        }
    }
    worst
}

/// Share of elements outside the bound of `rounded` when compared with the
/// values of `unrounded` (the fp32 oracle).
fn violations(got: &[f32], rounded: &Bounded, unrounded: &Bounded) -> f64 {
    let bad = got.iter().enumerate().filter(|&(i, &v)| (v as f64 - unrounded.value[i]).abs() > rounded.bound(i));
    bad.count() as f64 / got.len().max(1) as f64
}

const PASSES: [&str; 4] = ["out", "dq", "dk", "dv"];

/// Forward and backward on the device's tensor cores against the oracle,
/// bf16 and tf32, every shape: bound (A) on every output, (L) on lse; the
/// unrounded oracle must break (A) on a share of every pass's outputs.
fn tensor_core_attention_matches_the_rounding_oracle(dut: &DeviceUnderTest) {
    let Device::Gpu(dev) = &dut.device else {
        log("tensor-core attention: no tensor cores on the CPU (its reduced-precision path is the oracle itself)");
        return;
    };
    let mut worst = [[0.0f64; 5]; 2];
    let mut fewest = [[1.0f64; 4]; 2];
    let mut slack_share = [0.0f64; 2];
    for (si, &shape) in SHAPES.iter().enumerate() {
        let x = Inputs::new(shape, 50 + si as u64);
        let d = x.d;
        let up = |v: &[f32]| on(&Tensor::from_vec(v.to_vec(), [d.b, d.c, d.n]).unwrap(), &dut.device);
        let (q, k, v, dout) = (up(&x.q), up(&x.k), up(&x.v), up(&x.dout));
        for (pi, p) in [Precision::Bf16, Precision::Tf32].into_iter().enumerate() {
            let what = |pass: &str| format!("{p} {pass} {shape:?} on {}", dut.label);
            let (out, lse) = attention_tc::attention_forward(dev, gpu(&q), gpu(&k), gpu(&v), d, p).unwrap();
            let (dq, dk, dv) =
                attention_tc::attention_backward(dev, gpu(&dout), gpu(&q), gpu(&k), gpu(&v), &out, &lse, d, p).unwrap();
            let (out, lse) = (out.download_f32().unwrap(), lse.download_f32().unwrap());
            let got = [out.clone(), dq.download_f32().unwrap(), dk.download_f32().unwrap(), dv.download_f32().unwrap()];

            let f = reduced::attention_forward(p, d, &x.q, &x.k, &x.v);
            for (i, &l) in lse.iter().enumerate() {
                let err = (l as f64 - f.lse[i]).abs();
                assert!(err <= f.lse_err[i], "{}: lse[{i}] {l} vs {} (> {:.3e})", what("lse"), f.lse[i], f.lse_err[i]);
                worst[pi][4] = worst[pi][4].max(err / f.lse_err[i]);
            }
            // the backward oracle takes the kernel's forward (out, lse), as the kernel does
            let g = reduced::attention_backward(p, d, &x.dout, &x.q, &x.k, &x.v, &out, &lse);
            let want = [&f.out, &g.dq, &g.dk, &g.dv];
            for pass in 0..4 {
                worst[pi][pass] = worst[pi][pass].max(check(&what(PASSES[pass]), &got[pass], want[pass]));
            }
            let (sl, tot) = want
                .iter()
                .fold((0, 0), |(s, t), o| (s + o.slack.iter().filter(|&&x| x > 0.0).count(), t + o.slack.len()));
            slack_share[pi] = slack_share[pi].max(sl as f64 / tot as f64);

            let f32o = reduced::attention_forward(Precision::Fp32, d, &x.q, &x.k, &x.v);
            let g32 = reduced::attention_backward(Precision::Fp32, d, &x.dout, &x.q, &x.k, &x.v, &out, &lse);
            let unrounded = [&f32o.out, &g32.dq, &g32.dk, &g32.dv];
            if d.n > 1 {
                // (with one token p = 1 exactly and dq = dk = 0: nothing to tell apart)
                let shares = [0, 1, 2, 3].map(|pass| violations(&got[pass], want[pass], unrounded[pass]));
                log(&format!(
                    "  {p} {shape:?}: outputs breaking (A) against the unrounded oracle: out {:.1}%, dq {:.1}%, dk \
                     {:.1}%, dv {:.1}%",
                    100.0 * shares[0],
                    100.0 * shares[1],
                    100.0 * shares[2],
                    100.0 * shares[3]
                ));
                for pass in 0..4 {
                    // tf32 at C = 256: the scores' rigorous error bound (~1e-4
                    // relative in p) is a good part of tf32's spacing (2^-10), so
                    // the forward's slack covers the rounding of p and the
                    // unrounded oracle breaks (A) on few outputs (measured 0.2%);
                    // the same code is held to it at the other shapes
                    if !(p == Precision::Tf32 && pass == 0 && d.c >= 256) {
                        fewest[pi][pass] = fewest[pi][pass].min(shares[pass]);
                    }
                }
            }
        }
    }
    for (pi, p) in [Precision::Bf16, Precision::Tf32].into_iter().enumerate() {
        for (pass, &share) in fewest[pi].iter().enumerate() {
            assert!(
                share > 0.05,
                "{p} {}: only {:.1}% of outputs break bound (A) against the unrounded oracle: the bound cannot tell \
                 rounded operands from unrounded ones",
                PASSES[pass],
                100.0 * share
            );
        }
        log(&format!(
            "tensor-core attention {p} on {}: worst |err| / bound (A): out {:.3}, dq {:.3}, dk {:.3}, dv {:.3}; lse / \
             (L) {:.3}; outputs with slack > 0: at most {:.2}%; fewest outputs breaking (A) against the unrounded \
             oracle: {:.0}% / {:.0}% / {:.0}% / {:.0}%",
            dut.label,
            worst[pi][0],
            worst[pi][1],
            worst[pi][2],
            worst[pi][3],
            worst[pi][4],
            100.0 * slack_share[pi],
            100.0 * fewest[pi][0],
            100.0 * fewest[pi][1],
            100.0 * fewest[pi][2],
            100.0 * fewest[pi][3]
        ));
    }
}

per_device!(
    tensor_core_attention_matches_the_rounding_oracle,
    tensor_core_attention_matches_the_rounding_oracle_cpu,
    tensor_core_attention_matches_the_rounding_oracle_emu,
    tensor_core_attention_matches_the_rounding_oracle_cuda
);

/// `ops::attention_*_with`: fp32 is today's path bit for bit; tf32 / bf16
/// are the oracle on the CPU (its f64 sums rounded once) and the tensor-core
/// kernels on a GPU (within (A) / (L)); same inputs, same bits twice.
fn precision_setting_routes_attention(dut: &DeviceUnderTest) {
    let x = Inputs::new((2, 24, 19), 60);
    let d = x.d;
    let up = |v: &[f32]| on(&Tensor::from_vec(v.to_vec(), [d.b, d.c, d.n]).unwrap(), &dut.device);
    let (q, k, v, dout) = (up(&x.q), up(&x.k), up(&x.v), up(&x.dout));
    let today = ops::attention_forward(&q, &k, &v).unwrap();
    let tg = ops::attention_backward(&dout, &q, &k, &v, &today.out, &today.lse).unwrap();
    let f = ops::attention_forward_with(&q, &k, &v, Precision::Fp32).unwrap();
    let g = ops::attention_backward_with(&dout, &q, &k, &v, &f.out, &f.lse, Precision::Fp32).unwrap();
    let bits = |t: &Tensor| t.to_vec_f32().unwrap().into_iter().map(f32::to_bits).collect::<Vec<u32>>();
    for (a, b) in [(&today.out, &f.out), (&today.lse, &f.lse), (&tg.dq, &g.dq), (&tg.dk, &g.dk), (&tg.dv, &g.dv)] {
        assert_eq!(bits(a), bits(b), "fp32 differs from today's path on {}", dut.label);
    }
    for p in [Precision::Bf16, Precision::Tf32] {
        let f = ops::attention_forward_with(&q, &k, &v, p).unwrap();
        let g = ops::attention_backward_with(&dout, &q, &k, &v, &f.out, &f.lse, p).unwrap();
        let again = ops::attention_forward_with(&q, &k, &v, p).unwrap();
        assert_eq!(bits(&f.out), bits(&again.out), "{p}: not deterministic on {}", dut.label);
        let (out, lse) = (f.out.to_vec_f32().unwrap(), f.lse.to_vec_f32().unwrap());
        let want_f = reduced::attention_forward(p, d, &x.q, &x.k, &x.v);
        let want_g = reduced::attention_backward(p, d, &x.dout, &x.q, &x.k, &x.v, &out, &lse);
        let got = [out, g.dq.to_vec_f32().unwrap(), g.dk.to_vec_f32().unwrap(), g.dv.to_vec_f32().unwrap()];
        let want = [&want_f.out, &want_g.dq, &want_g.dk, &want_g.dv];
        for pass in 0..4 {
            if dut.is_cpu() {
                let exact: Vec<f32> = want[pass].value.iter().map(|&v| v as f32).collect();
                assert_eq!(got[pass], exact, "{p} {} on the CPU is not the oracle's", PASSES[pass]);
            } else {
                check(&format!("{p} {} via ops on {}", PASSES[pass], dut.label), &got[pass], want[pass]);
            }
        }
        if dut.is_cpu() {
            assert_eq!(lse, want_f.lse.iter().map(|&v| v as f32).collect::<Vec<f32>>(), "{p} lse on the CPU");
        }
    }
    log(&format!(
        "attention precision setting on {}: fp32 bit-identical to today's path; tf32 / bf16 routed",
        dut.label
    ));
}

per_device!(
    precision_setting_routes_attention,
    precision_setting_routes_attention_cpu,
    precision_setting_routes_attention_emu,
    precision_setting_routes_attention_cuda
);

/// q, k, v stored in bf16 (a bf16 training cache keeps them so) give the
/// forward (out, lse) and the backward (dq, dk, dv) the same bits as their
/// f32 originals at bf16 precision: the `_bf16in` kernels widen exactly
/// what the `_bf16` ones round while staging. And they are refused at
/// other precisions.
fn bf16_stored_qkv_gives_the_same_bits(dut: &DeviceUnderTest) {
    use diffuse_tensor::DType;
    if dut.is_cpu() {
        log("bf16-stored q, k, v: no bf16 storage on the CPU");
        return;
    }
    let bits = |t: &Tensor| t.to_vec_f32().unwrap().into_iter().map(f32::to_bits).collect::<Vec<u32>>();
    let bf = Precision::Bf16;
    for (si, &shape) in SHAPES.iter().enumerate() {
        let x = Inputs::new(shape, 70 + si as u64);
        let d = x.d;
        let up = |v: &[f32]| on(&Tensor::from_vec(v.to_vec(), [d.b, d.c, d.n]).unwrap(), &dut.device);
        let (q, k, v, dout) = (up(&x.q), up(&x.k), up(&x.v), up(&x.dout));
        let h = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
        let (qh, kh, vh) = (h(&q), h(&k), h(&v));
        let f = ops::attention_forward_with(&q, &k, &v, bf).unwrap();
        let fh = ops::attention_forward_with(&qh, &kh, &vh, bf).unwrap();
        let g = ops::attention_backward_with(&dout, &q, &k, &v, &f.out, &f.lse, bf).unwrap();
        let gh = ops::attention_backward_with(&dout, &qh, &kh, &vh, &fh.out, &fh.lse, bf).unwrap();
        let pairs = [(&f.out, &fh.out), (&f.lse, &fh.lse), (&g.dq, &gh.dq), (&g.dk, &gh.dk), (&g.dv, &gh.dv)];
        for (i, (a, b)) in pairs.into_iter().enumerate() {
            let what = ["out", "lse", "dq", "dk", "dv"][i];
            assert_eq!(bits(a), bits(b), "{what} {shape:?} on {}: bf16-stored q, k, v differ from f32", dut.label);
        }
    }
    let x = Inputs::new((1, 16, 9), 79);
    let up = |v: &[f32]| on(&Tensor::from_vec(v.to_vec(), [1, 16, 9]).unwrap(), &dut.device).to_dtype(DType::BF16);
    let (qh, kh, vh) = (up(&x.q).unwrap(), up(&x.k).unwrap(), up(&x.v).unwrap());
    for p in [Precision::Fp32, Precision::Tf32] {
        let e = ops::attention_forward_with(&qh, &kh, &vh, p).unwrap_err().to_string();
        assert!(e.contains("q, k, v: bf16 storage needs precision bf16"), "{p}: {e}");
    }
    let e = ops::attention_forward_with(
        &qh,
        &kh,
        &on(&Tensor::from_vec(x.v.clone(), [1, 16, 9]).unwrap(), &dut.device),
        bf,
    );
    assert!(e.unwrap_err().to_string().contains("dtype mismatch"));
    log(&format!("bf16-stored q, k, v on {}: out, lse, dq, dk, dv bit-identical to f32 q, k, v", dut.label));
}

per_device!(
    bf16_stored_qkv_gives_the_same_bits,
    bf16_stored_qkv_gives_the_same_bits_cpu,
    bf16_stored_qkv_gives_the_same_bits_emu,
    bf16_stored_qkv_gives_the_same_bits_cuda
);
