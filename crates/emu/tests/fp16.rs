//! __half and __nv_bfloat16 conversions must be bit-exact (round to nearest
//! even, subnormals, overflow to infinity), checked against the `half` crate
//! through kernel launches (tests/kernels/emu_semantics.cu).

mod common;

use common::{emu, launch, Rng};
use diffuse_emu::{Arg, Emulator};
use half::{bf16, f16};

/// Every interesting float: all exponents with edge mantissas, the halfway
/// points and their neighbours for both formats, plus random bit patterns.
fn test_floats() -> Vec<f32> {
    let mut v = Vec::new();
    for e in 0..256u32 {
        for m in
            [0u32, 1, 2, 0x1000, 0x0fff, 0x1001, 0x2000, 0x3000, 0x8000, 0x7fff, 0x8001, 0x18000, 0x7f_ffff, 0x40_0000]
        {
            for s in [0u32, 1] {
                v.push(f32::from_bits(s << 31 | e << 23 | m));
            }
        }
    }
    // all halfway points between consecutive halves (and +-1 ulp)
    for h in 0..0x7c00u16 {
        let a = f16::from_bits(h).to_f32() as f64;
        let b = f16::from_bits(h + 1).to_f32() as f64;
        let mid = ((a + b) / 2.0) as f32;
        for d in [-1i32, 0, 1] {
            v.push(f32::from_bits((mid.to_bits() as i32 + d) as u32));
            v.push(-f32::from_bits((mid.to_bits() as i32 + d) as u32));
        }
    }
    let mut rng = Rng(42);
    for _ in 0..200_000 {
        v.push(f32::from_bits(rng.next_u32()));
    }
    v.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 65504.0, 65519.99, 65520.0, 65536.0, 1e-8, 5.96e-8, 2.98e-8]);
    v
}

fn to16(emu: &Emulator, input: &[f32], mode: i32) -> Vec<u16> {
    let n = input.len();
    let x = emu.upload(input).unwrap();
    let y = emu.alloc(n * 2).unwrap();
    let args = [Arg::Ptr(y), Arg::Ptr(x), Arg::U64(n as u64), Arg::I32(mode)];
    launch(emu, "emu_test_to16", n.div_ceil(256) as u32, 256u32, 0, &args).unwrap();
    let out = emu.download(y, n).unwrap();
    emu.free(x).unwrap();
    emu.free(y).unwrap();
    out
}

fn from16(emu: &Emulator, input: &[u16], mode: i32) -> Vec<f32> {
    let n = input.len();
    let x = emu.upload(input).unwrap();
    let y = emu.alloc(n * 4).unwrap();
    let args = [Arg::Ptr(y), Arg::Ptr(x), Arg::U64(n as u64), Arg::I32(mode)];
    launch(emu, "emu_test_from16", n.div_ceil(256) as u32, 256u32, 0, &args).unwrap();
    let out = emu.download(y, n).unwrap();
    emu.free(x).unwrap();
    emu.free(y).unwrap();
    out
}

#[test]
fn float_to_half_and_bf16_round_to_nearest_even_bit_exactly() {
    let emu = emu();
    let input = test_floats();
    let h = to16(&emu, &input, 0);
    let b = to16(&emu, &input, 4);
    for (i, &f) in input.iter().enumerate() {
        if f.is_nan() {
            // CUDA returns the canonical NaN 0x7fff for every NaN.
            assert_eq!(h[i], 0x7fff, "half of NaN {:#x}", f.to_bits());
            assert_eq!(b[i], 0x7fff, "bf16 of NaN {:#x}", f.to_bits());
            continue;
        }
        assert_eq!(h[i], f16::from_f32(f).to_bits(), "half of {f:e} ({:#x})", f.to_bits());
        assert_eq!(b[i], bf16::from_f32(f).to_bits(), "bf16 of {f:e} ({:#x})", f.to_bits());
    }
}

#[test]
fn every_half_and_bf16_converts_to_float_exactly() {
    let emu = emu();
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let h = from16(&emu, &all, 0);
    let b = from16(&emu, &all, 1);
    for &bits in &all {
        let (wh, wb) = (f16::from_bits(bits).to_f32(), bf16::from_bits(bits).to_f32());
        let (gh, gb) = (h[bits as usize], b[bits as usize]);
        if wh.is_nan() {
            assert!(gh.is_nan());
        } else {
            assert_eq!(gh.to_bits(), wh.to_bits(), "half {bits:#x}");
        }
        if wb.is_nan() {
            assert!(gb.is_nan());
        } else {
            assert_eq!(gb.to_bits(), wb.to_bits(), "bf16 {bits:#x}");
        }
    }
    // and back: every non-NaN 16-bit value survives the round trip
    let finite_h: Vec<f32> = all.iter().map(|&b| f16::from_bits(b).to_f32()).filter(|f| !f.is_nan()).collect();
    let back = to16(&emu, &finite_h, 0);
    for (f, b) in finite_h.iter().zip(back) {
        assert_eq!(b, f16::from_f32(*f).to_bits());
    }
}

fn directed(f: f32, mode: i32) -> u16 {
    // the exact value's neighbours in half, chosen by direction
    let rn = f16::from_f32(f);
    let back = rn.to_f32();
    if f.is_infinite() || back == f {
        return rn.to_bits();
    }
    let below = if back < f {
        rn
    } else {
        f16::from_bits(if rn.to_bits() & 0x7fff == 0 {
            0x8001
        } else if rn.to_bits() & 0x8000 != 0 {
            rn.to_bits() + 1
        } else {
            rn.to_bits() - 1
        })
    };
    let above = if back > f {
        rn
    } else {
        f16::from_bits(if rn.to_bits() == 0x8000 || rn.to_bits() == 0 {
            0x0001
        } else if rn.to_bits() & 0x8000 != 0 {
            rn.to_bits() - 1
        } else {
            rn.to_bits() + 1
        })
    };
    let toward_zero = if f > 0.0 { below } else { above };
    let r = match mode {
        1 => toward_zero,
        2 => below,
        _ => above,
    };
    // beyond the largest finite value: directed roundings stop at 65504
    if r.is_infinite() && ((mode == 1) || (mode == 2 && f > 0.0) || (mode == 3 && f < 0.0)) {
        return if f > 0.0 { 0x7bff } else { 0xfbff };
    }
    r.to_bits()
}

#[test]
fn directed_roundings_to_half() {
    let emu = emu();
    let input: Vec<f32> = test_floats().into_iter().filter(|f| !f.is_nan()).collect();
    for mode in 1..=3 {
        let got = to16(&emu, &input, mode);
        for (i, &f) in input.iter().enumerate() {
            assert_eq!(got[i], directed(f, mode), "mode {mode}, {f:e} ({:#x})", f.to_bits());
        }
    }
}

/// f64 -> f16 rounded once (to odd into f32, then to nearest even).
fn f16_of_f64(x: f64) -> f16 {
    let mut f = x as f32;
    if f.is_infinite() && x.is_finite() {
        f = f32::MAX.copysign(x as f32);
    } else if (f as f64).abs() > x.abs() {
        f = f32::from_bits(f.to_bits() - 1);
    }
    if (f as f64) != x {
        f = f32::from_bits(f.to_bits() | 1);
    }
    f16::from_f32(f)
}

#[test]
fn half_arithmetic_is_correctly_rounded() {
    let emu = emu();
    let mut rng = Rng(8);
    let n = 20_000;
    let gen = |rng: &mut Rng| loop {
        let b = rng.next_u32() as u16;
        if !f16::from_bits(b).is_nan() && (b & 0x7c00) != 0x7c00 {
            break b;
        }
    };
    let a: Vec<u16> = (0..n).map(|_| gen(&mut rng)).collect();
    let b: Vec<u16> = (0..n).map(|_| gen(&mut rng)).collect();
    let (da, db) = (emu.upload(&a).unwrap(), emu.upload(&b).unwrap());
    let out = emu.alloc(n * 8).unwrap();
    let args = [Arg::Ptr(out), Arg::Ptr(da), Arg::Ptr(db), Arg::I32(n as i32)];
    launch(&emu, "emu_test_half_ops", n.div_ceil(128) as u32, 128u32, 0, &args).unwrap();
    let v: Vec<u16> = emu.download(out, 4 * n).unwrap();
    for i in 0..n {
        let (x, y) = (f16::from_bits(a[i]).to_f64(), f16::from_bits(b[i]).to_f64());
        let exact_sum = f16_of_f64(x + y); // exact in f64, rounded once
        let exact_mul = f16_of_f64(x * y);
        let check = |got: u16, want: f16, what: &str| {
            if want.is_nan() {
                assert!(f16::from_bits(got).is_nan());
            } else {
                assert_eq!(got, want.to_bits(), "{what} of {x} and {y}");
            }
        };
        check(v[4 * i], exact_sum, "add");
        check(v[4 * i + 1], exact_mul, "mul");
        // fma: x*y + x is exact in f64 (x*y has 22 significant bits and
        // the exponents of two halves are close enough).
        let fma = f16_of_f64(x.mul_add(y, x));
        check(v[4 * i + 2], fma, "fma");
        let (bx, by) = (bf16::from_bits(a[i]).to_f64(), bf16::from_bits(b[i]).to_f64());
        let bsum = bf16::from_f64(bx + by);
        if bsum.is_nan() {
            assert!(bf16::from_bits(v[4 * i + 3]).is_nan());
        } else {
            assert_eq!(v[4 * i + 3], bsum.to_bits(), "bf16 add of {bx} and {by}");
        }
    }
}
