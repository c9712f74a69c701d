//! The emulator's WMMA API (shim/include/mma.h) against naive references:
//! a tiled bf16 / tf32 GEMM in every fragment layout and awkward sizes,
//! bit-exact against an f32 loop that rounds the inputs as the kernel does
//! and adds the products in k order (the emulator's defined numerics), and
//! within a derived bound of an f64 reference; planted bugs (wrong ldm, a
//! transposed load, a wrong tile index) must be caught; misuse of the
//! warp-collective calls must be a launch error.
//! Kernels: tests/kernels/emu_wmma.cu.

mod common;

use common::{emu, launch, Rng, ORDERS};
use diffuse_emu::{Arg, EmuError, Emulator};
use half::bf16;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fmt {
    Bf16,
    Tf32,
}

/// bf16: round to nearest even (the `half` crate, as __float2bfloat16).
/// tf32: round to nearest, ties away from zero, as cvt.rna.tf32.f32.
fn round_in(v: f32, f: Fmt) -> f32 {
    match f {
        Fmt::Bf16 => bf16::from_f32(v).to_f32(),
        Fmt::Tf32 => {
            if !v.is_finite() {
                return v;
            }
            f32::from_bits((v.to_bits() + 0x1000) & !0x1fff)
        }
    }
}

struct Gemm {
    m: usize,
    n: usize,
    k: usize,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Gemm {
    fn random(m: usize, n: usize, k: usize, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let a = (0..m * k).map(|_| rng.uniform(-2.0, 2.0)).collect();
        let b = (0..k * n).map(|_| rng.uniform(-2.0, 2.0)).collect();
        Gemm { m, n, k, a, b }
    }

    /// The emulator's numerics: rounded inputs, exact products, one f32
    /// rounding per addition, k in order.
    fn exact_f32(&self, f: Fmt) -> Vec<f32> {
        let mut c = vec![0f32; self.m * self.n];
        for i in 0..self.m {
            for j in 0..self.n {
                let mut acc = 0f32;
                for p in 0..self.k {
                    acc += round_in(self.a[i * self.k + p], f) * round_in(self.b[p * self.n + j], f);
                }
                c[i * self.n + j] = acc;
            }
        }
        c
    }

    /// (f64 reference of the unrounded inputs, sum |a||b|) per element.
    fn f64_ref(&self) -> (Vec<f64>, Vec<f64>) {
        let (mut c, mut s) = (vec![0f64; self.m * self.n], vec![0f64; self.m * self.n]);
        for i in 0..self.m {
            for j in 0..self.n {
                for p in 0..self.k {
                    let prod = self.a[i * self.k + p] as f64 * self.b[p * self.n + j] as f64;
                    c[i * self.n + j] += prod;
                    s[i * self.n + j] += prod.abs();
                }
            }
        }
        (c, s)
    }

    fn run(&self, emu: &Emulator, f: Fmt, layout: i32, plant: i32) -> Result<Vec<f32>, EmuError> {
        let a = emu.upload(&self.a)?;
        let b = emu.upload(&self.b)?;
        let c = emu.alloc(self.m * self.n * 4)?;
        let name = match f {
            Fmt::Bf16 => "emu_test_wmma_gemm_bf16",
            Fmt::Tf32 => "emu_test_wmma_gemm_tf32",
        };
        let grid = (self.n.div_ceil(32) as u32, self.m.div_ceil(32) as u32, 1u32);
        let args = [
            Arg::Ptr(a),
            Arg::Ptr(b),
            Arg::Ptr(c),
            Arg::I32(self.m as i32),
            Arg::I32(self.n as i32),
            Arg::I32(self.k as i32),
            Arg::I32(layout),
            Arg::I32(plant),
        ];
        launch(emu, name, grid, 128u32, 0, &args)?;
        let out = emu.download::<f32>(c, self.m * self.n)?;
        emu.free(a)?;
        emu.free(b)?;
        emu.free(c)?;
        Ok(out)
    }
}

/// Error bound of one element, derived: each input is rounded once,
/// a~ = a(1 + d_a), |d_a| <= u_in (u_bf16 = 2^-8, u_tf32 = 2^-11), so each
/// product carries |a b| (2 u_in + u_in^2); the products are exact in f32 and
/// the running sum of K of them is rounded K times, adding at most
/// K u_f32 (1 + ...) sum |a~ b~| (u_f32 = 2^-24; Higham's gamma_K). In all,
/// |c - c_exact| <= ((2 u_in + u_in^2) + 1.01 K u_f32 (1 + 2 u_in)^2) sum |a b|.
fn bound(f: Fmt, k: usize, sum_abs: f64) -> f64 {
    let u_in = match f {
        Fmt::Bf16 => 2f64.powi(-8),
        Fmt::Tf32 => 2f64.powi(-11),
    };
    let u32_ = 2f64.powi(-24);
    ((2.0 * u_in + u_in * u_in) + 1.01 * k as f64 * u32_ * (1.0 + 2.0 * u_in).powi(2)) * sum_abs
}

#[test]
fn wmma_gemm_matches_the_reference_bit_for_bit_in_every_layout_and_order() {
    let emu = emu();
    // awkward sizes: partial tiles in m, n and k
    let cases = [(32, 32, 16, 1u64), (45, 37, 29, 2), (17, 70, 50, 3), (64, 16, 3, 4)];
    for f in [Fmt::Bf16, Fmt::Tf32] {
        for &(m, n, k, seed) in &cases {
            let g = Gemm::random(m, n, k, seed);
            let want = g.exact_f32(f);
            let (exact, sum_abs) = g.f64_ref();
            let mut worst = 0f64;
            for layout in 0..4 {
                for o in ORDERS {
                    emu.set_thread_order(o);
                    let got = g.run(&emu, f, layout, 0).unwrap();
                    for (idx, (&x, &y)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            x.to_bits(),
                            y.to_bits(),
                            "{f:?} {m}x{n}x{k} layout {layout} order {o}: element {idx}: {x} != {y}"
                        );
                        let err = (x as f64 - exact[idx]).abs();
                        let b = bound(f, k, sum_abs[idx]);
                        assert!(err <= b, "{f:?} {m}x{n}x{k}: element {idx}: |err| {err:e} > bound {b:e}");
                        worst = worst.max(err / b);
                    }
                }
            }
            eprintln!("{f:?} {m}x{n}x{k}: worst |err| / bound = {worst:.3}");
        }
    }
}

#[test]
fn planted_wmma_bugs_are_caught() {
    let emu = emu();
    let g = Gemm::random(64, 64, 48, 9);
    for f in [Fmt::Bf16, Fmt::Tf32] {
        let want = g.exact_f32(f);
        let (exact, sum_abs) = g.f64_ref();
        for (plant, what) in [(1, "wrong ldm"), (2, "transposed A load"), (3, "wrong tile index")] {
            for layout in 0..4 {
                for o in ORDERS {
                    emu.set_thread_order(o);
                    let got = g.run(&emu, f, layout, plant).unwrap();
                    assert_ne!(got, want, "{f:?} {what} layout {layout} order {o}: the planted bug went unnoticed");
                    // and the derived bound (not only bit-exactness) rejects it
                    let over = got
                        .iter()
                        .enumerate()
                        .filter(|&(i, &x)| {
                            let err = (x as f64 - exact[i]).abs();
                            err.is_nan() || err > bound(f, g.k, sum_abs[i])
                        })
                        .count();
                    assert!(over > 0, "{f:?} {what} layout {layout} order {o}: within the bound");
                }
            }
        }
    }
}

#[test]
fn accumulator_loads_and_stores_in_both_layouts() {
    let emu = emu();
    let mut rng = Rng(77);
    let a: Vec<u16> = (0..256).map(|_| bf16::from_f32(rng.uniform(-3.0, 3.0)).to_bits()).collect();
    let b: Vec<u16> = (0..256).map(|_| bf16::from_f32(rng.uniform(-3.0, 3.0)).to_bits()).collect();
    let c: Vec<f32> = (0..256).map(|_| rng.uniform(-5.0, 5.0)).collect();
    let af = |i: usize, p: usize| bf16::from_bits(a[i * 16 + p]).to_f32(); // row-major
    let bf = |p: usize, j: usize| bf16::from_bits(b[j * 16 + p]).to_f32(); // col-major
    let (da, db, dc) = (emu.upload(&a).unwrap(), emu.upload(&b).unwrap(), emu.upload(&c).unwrap());
    let dd = emu.alloc(256 * 4).unwrap();
    for c_layout in 0..2 {
        for d_layout in 0..2 {
            for o in ORDERS {
                emu.set_thread_order(o);
                let args =
                    [Arg::Ptr(da), Arg::Ptr(db), Arg::Ptr(dc), Arg::Ptr(dd), Arg::I32(c_layout), Arg::I32(d_layout)];
                launch(&emu, "emu_test_wmma_tile_bf16", 1u32, 32u32, 0, &args).unwrap();
                let got = emu.download::<f32>(dd, 256).unwrap();
                for i in 0..16 {
                    for j in 0..16 {
                        let mut acc = if c_layout == 0 { c[i * 16 + j] } else { c[j * 16 + i] };
                        for p in 0..16 {
                            acc += af(i, p) * bf(p, j);
                        }
                        let at = if d_layout == 0 { i * 16 + j } else { j * 16 + i };
                        assert_eq!(got[at].to_bits(), acc.to_bits(), "C {c_layout} D {d_layout} ({i},{j}) order {o}");
                    }
                }
            }
        }
    }
}

#[test]
fn float_to_tf32_rounds_to_nearest_ties_away() {
    let emu = emu();
    let mut rng = Rng(5);
    let mut x: Vec<f32> = (0..20_000).map(|_| f32::from_bits(rng.next_u32())).collect();
    // ties, both signs, and the values around them
    for m in [0x1000u32, 0x3000, 0x0fff, 0x1001, 0x7f_f000, 0x7f_efff] {
        for e in [1u32, 100, 127, 254] {
            for s in [0u32, 1] {
                x.push(f32::from_bits(s << 31 | e << 23 | m));
            }
        }
    }
    let dx = emu.upload(&x).unwrap();
    let dy = emu.alloc(x.len() * 4).unwrap();
    let args = [Arg::Ptr(dx), Arg::Ptr(dy), Arg::I32(x.len() as i32)];
    launch(&emu, "emu_test_float_to_tf32", x.len().div_ceil(256) as u32, 256u32, 0, &args).unwrap();
    let y = emu.download::<f32>(dy, x.len()).unwrap();
    for (&xi, &yi) in x.iter().zip(&y) {
        if xi.is_nan() {
            assert!(yi.is_nan());
            continue;
        }
        // independent: the nearest of the two tf32 neighbours in f64, ties away from zero
        let lo = f32::from_bits(xi.to_bits() & !0x1fff);
        let hi = f32::from_bits((xi.to_bits() & !0x1fff) + 0x2000);
        // past the largest tf32 the next value up is 2^128 (infinity in f32)
        let hi64 = if hi.is_infinite() { hi.signum() as f64 * 2f64.powi(128) } else { hi as f64 };
        let (dl, dh) = ((xi as f64 - lo as f64).abs(), (hi64 - xi as f64).abs());
        let want = if !xi.is_finite() || dl < dh { lo } else { hi };
        assert_eq!(yi.to_bits(), want.to_bits(), "{xi:e} ({:#x})", xi.to_bits());
        assert_eq!(yi.to_bits(), round_in(xi, Fmt::Tf32).to_bits());
    }
}

#[test]
fn wmma_misuse_is_a_launch_error() {
    let emu = emu();
    let mut rng = Rng(3);
    let x: Vec<f32> = (0..512).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let dx = emu.upload(&x).unwrap();
    let dy = emu.alloc(32 * 4).unwrap();
    let run = |which: i32| {
        launch(&emu, "emu_bug_wmma_misuse", 1u32, 32u32, 0, &[Arg::Ptr(dx), Arg::Ptr(dy), Arg::I32(which)])
    };
    let cases: [(i32, &[&str]); 6] = [
        (0, &["emu_bug_wmma_misuse", "wmma"]),
        (1, &["wmma::load_matrix_sync", "same pointer"]),
        (2, &["wmma::load_matrix_sync", "32-byte"]),
        (3, &["wmma::mma_sync", "__float_to_tf32"]),
        (4, &["emu_bug_wmma_misuse", "race"]),
        (5, &["wmma::load_matrix_sync", "ldm"]),
    ];
    for o in ORDERS {
        emu.set_thread_order(o);
        for (which, needles) in cases {
            let msg = match run(which) {
                Ok(()) => panic!("case {which} order {o}: no error"),
                Err(e) => e.to_string(),
            };
            for n in needles {
                assert!(msg.contains(n), "case {which} order {o}: {msg:?} lacks {n:?}");
            }
        }
    }
    // the same kernel without a planted misuse runs
    launch(&emu, "emu_bug_wmma_misuse", 1u32, 32u32, 0, &[Arg::Ptr(dx), Arg::Ptr(dy), Arg::I32(6)]).unwrap();
}
