//! bf16 storage on a GPU (kernels/cast.cu, `Tensor::to_dtype`): every
//! element's bits against rounding written here from the definition
//! (nearest, ties to even, on the f32 bit pattern), the widening back
//! exact, and the errors that keep bf16 tensors out of f32 code.

mod common;
use common::*;
use diffuse_tensor::ops::{self, Conv2dParams};
use diffuse_tensor::{DType, Device, Precision, Tensor};

/// bf16 bits of `x`, round to nearest even: the top 16 bits of the f32
/// pattern plus one where the dropped 16 bits are over half, or exactly
/// half with an odd kept part. NaN stays NaN (quiet).
fn bf16_bits_naive(x: f32) -> u16 {
    if x.is_nan() {
        return ((x.to_bits() >> 16) as u16) | 0x0040;
    }
    let b = x.to_bits();
    let (kept, dropped) = (b >> 16, b & 0xffff);
    let up = dropped > 0x8000 || (dropped == 0x8000 && kept & 1 == 1);
    (kept + up as u32) as u16 // a carry into the exponent is the right answer (up to inf)
}

/// Values where rounding is decided: exact ties both ways, just over and
/// under a tie, the largest finite values (one rounds to inf), subnormals,
/// signed zeros and infinities.
fn edge_values() -> Vec<f32> {
    let from = f32::from_bits;
    vec![
        0.0,
        -0.0,
        1.0,
        from(0x3f80_8000), // 1 + 2^-8: a tie, kept part even -> 1
        from(0x3f81_8000), // a tie, kept part odd -> up
        from(0x3f80_8001), // just over a tie -> up
        from(0x3f80_7fff), // just under -> down
        -from(0x3f81_8000),
        f32::MAX,          // rounds up to inf
        from(0x7f7f_7fff), // stays finite
        from(0x0000_0001), // the smallest subnormal
        from(0x0000_8000), // a subnormal tie
        from(0x0001_8000),
        f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-30,
        -3.0e38,
    ]
}

/// Lengths: one (a lone last element), even, odd, and past the grid cap of
/// 8192 blocks of 256 threads with a pair each (4,194,304 elements), so the
/// grid-stride loop wraps and ends on an odd element.
const LENGTHS: [usize; 5] = [1, 2, 7, 1003, 8192 * 256 * 2 + 13];

fn bf16_round_trip(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    if dut.is_cpu() {
        // the host has no bf16 storage: a clear error, never a silent f32
        let x = Tensor::from_vec(vec![1.5f32, 2.0], [2]).unwrap();
        for e in [
            x.to_dtype(DType::BF16).unwrap_err(),
            Tensor::zeros([3], DType::BF16, dev).unwrap_err(),
            Tensor::randn([3], 1, 0, DType::BF16, dev).unwrap_err(),
        ] {
            assert!(e.to_string().contains("bf16 tensors live on GPUs only"), "{e}");
        }
        log("bf16 round trip: the CPU refuses bf16 storage (checked)");
        return;
    }
    let mut rng = TensorRng::new(71);
    for len in LENGTHS {
        let mut x = rng.vec(len, -4.0, 4.0);
        for (i, v) in edge_values().into_iter().enumerate() {
            if i + 1 < len {
                x[len - 2 - i] = v;
            }
        }
        // an odd length's last element is stored alone: a tie rounding up there
        x[len - 1] = f32::from_bits(0x3f81_8000);
        let xg = on(&Tensor::from_vec(x.clone(), [len]).unwrap(), dev);
        let h = xg.to_dtype(DType::BF16).unwrap();
        assert_eq!(h.dtype(), DType::BF16);
        assert_eq!(h.dims(), [len]);
        let diffuse_tensor::Storage::Gpu(g) = h.storage() else { panic!("a bf16 tensor left the GPU") };
        let bits: Vec<u16> = g.download_bf16().unwrap().into_iter().map(|b| b.to_bits()).collect();
        for (i, (&v, &got)) in x.iter().zip(&bits).enumerate() {
            let want = bf16_bits_naive(v);
            assert_eq!(got, want, "len {len} element {i}: bf16({v:e} = {:#010x})", v.to_bits());
            assert_eq!(half::bf16::from_f32(v).to_bits(), want, "the half crate disagrees on {v:e}");
        }
        // widening is exact, on the device and on the way to the host
        let back = h.to_dtype(DType::F32).unwrap();
        assert_eq!(back.dtype(), DType::F32);
        let want: Vec<u32> = bits.iter().map(|&b| (b as u32) << 16).collect();
        for got in [
            back.to_vec_f32().unwrap(),
            h.to_vec_f32().unwrap(),
            h.to_device(&Device::Cpu).unwrap().to_vec_f32().unwrap(),
        ] {
            assert!(got.iter().map(|v| v.to_bits()).eq(want.iter().copied()), "len {len}: widening is not exact");
        }
    }
    let z = Tensor::zeros([5], DType::BF16, dev).unwrap();
    assert_eq!((z.dtype(), z.to_vec_f32().unwrap()), (DType::BF16, vec![0.0; 5]));
    log(&format!("bf16 round trip on {}: every element's bits as nearest-even, lengths {LENGTHS:?}", dut.label));
}

per_device!(bf16_round_trip, bf16_round_trip_cpu, bf16_round_trip_emu, bf16_round_trip_cuda);

/// A bf16 tensor reaches only what reads bf16: an f32 kernel refuses it at
/// launch (named), mixing it with f32 operands is a dtype error, and the
/// convolution takes it only at bf16 precision.
fn bf16_tensors_stay_out_of_f32_code(dut: &DeviceUnderTest) {
    let dev = &dut.device;
    if dut.is_cpu() {
        log("bf16 guards: no bf16 tensors on the CPU");
        return;
    }
    let mut rng = TensorRng::new(72);
    let x = on(&Tensor::from_vec(rng.vec(2 * 3 * 5 * 5, -1.0, 1.0), [2, 3, 5, 5]).unwrap(), dev);
    let w = on(&Tensor::from_vec(rng.vec(4 * 3 * 3 * 3, -1.0, 1.0), [4, 3, 3, 3]).unwrap(), dev);
    let xh = x.to_dtype(DType::BF16).unwrap();
    let e = ops::silu_forward(&xh).unwrap_err().to_string();
    assert!(e.contains("silu_fwd_f32") && e.contains("bf16 tensor where the kernel reads f32"), "{e}");
    let e = ops::add(&x, &xh).unwrap_err().to_string();
    assert!(e.contains("dtype mismatch"), "{e}");
    let p = Conv2dParams::same(3);
    for prec in [Precision::Fp32, Precision::Tf32] {
        let e = ops::conv2d_forward_with(&xh, &w, None, &p, prec).unwrap_err().to_string();
        assert!(e.contains("x: bf16 storage needs precision bf16"), "{prec}: {e}");
    }
    // the weight stays f32: a bf16 weight is not an input the kernels take
    let e = ops::conv2d_forward_with(&x, &w.to_dtype(DType::BF16).unwrap(), None, &p, Precision::Bf16).unwrap_err();
    assert!(e.to_string().contains("dtype mismatch"), "{e}");
    log(&format!("bf16 guards on {}: f32 kernels, mixed operands and non-bf16 precisions refuse bf16", dut.label));
}

per_device!(
    bf16_tensors_stay_out_of_f32_code,
    bf16_tensors_stay_out_of_f32_code_cpu,
    bf16_tensors_stay_out_of_f32_code_emu,
    bf16_tensors_stay_out_of_f32_code_cuda
);
