//! The arithmetic precision of the GEMM-family ops (convolution, linear):
//! fp32 everywhere, or tensor-core inputs rounded to tf32 or bf16 with fp32
//! accumulation. Activations and weights stay f32 in memory; only the GEMM
//! inputs are rounded, where they enter the tensor cores.

use half::bf16;

/// How a GEMM's inputs are rounded before the multiply-accumulate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 inputs, f32 accumulation: the SIMT kernels and the CPU reference.
    #[default]
    Fp32,
    /// Inputs rounded to tf32 (10 mantissa bits) as `cvt.rna.tf32.f32` does
    /// (nearest, ties away from zero); f32 accumulation.
    Tf32,
    /// Inputs rounded to bf16 (7 mantissa bits, nearest even, as
    /// `__float2bfloat16`); f32 accumulation.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Tf32, Precision::Bf16];

    /// `x` as the tensor core sees it.
    pub fn round(self, x: f32) -> f32 {
        match self {
            Precision::Fp32 => x,
            Precision::Bf16 => bf16::from_f32(x).to_f32(),
            Precision::Tf32 => {
                if !x.is_finite() {
                    return x;
                }
                // add half an ulp of tf32 to the magnitude, then truncate:
                // nearest, ties away from zero (a carry into the exponent is
                // the right result, up to infinity)
                f32::from_bits((x.to_bits() + 0x1000) & !0x1fff)
            }
        }
    }

    /// The unit roundoff of the input rounding: 2^-24 (f32, no rounding
    /// beyond the f32 values themselves), 2^-11 (tf32), 2^-8 (bf16).
    pub fn input_unit_roundoff(self) -> f64 {
        match self {
            Precision::Fp32 => 0.0,
            Precision::Tf32 => 2f64.powi(-11),
            Precision::Bf16 => 2f64.powi(-8),
        }
    }

    /// Whether the GEMMs run on tensor cores (anything but fp32).
    pub fn uses_tensor_cores(self) -> bool {
        self != Precision::Fp32
    }
}

impl Precision {
    /// What a run uses when it is not told: bf16 on a GPU with bf16 tensor
    /// cores (compute capability 8.0 and newer), fp32 on the CPU (whose
    /// reduced-precision path is a slow reference), the emulator and older
    /// GPUs.
    pub fn default_for(device: &crate::Device) -> Precision {
        match device {
            crate::Device::Gpu(g) if g.compute_capability().is_some_and(|(major, _)| major >= 8) => Precision::Bf16,
            _ => Precision::Fp32,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("precision is fp32, tf32 or bf16, not {s:?}")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_rounds_to_nearest_ties_away_and_bf16_to_nearest_even() {
        let t = Precision::Tf32;
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: away from zero
        assert_eq!(t.round(1.0 + 2f32.powi(-11)), 1.0 + 2f32.powi(-10));
        assert_eq!(t.round(-(1.0 + 2f32.powi(-11))), -(1.0 + 2f32.powi(-10)));
        assert_eq!(t.round(1.0 + 2f32.powi(-12)), 1.0);
        assert_eq!(t.round(f32::MAX), f32::INFINITY);
        let b = Precision::Bf16;
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to the even one, 1
        assert_eq!(b.round(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(b.round(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2.0 * 2f32.powi(-7));
        assert_eq!(Precision::Fp32.round(0.1), 0.1);
        for p in Precision::ALL {
            let u = p.input_unit_roundoff();
            for x in [0.1f32, -3.7, 1234.5678, 1e-20] {
                let r = p.round(x) as f64;
                assert!((r - x as f64).abs() <= u * (x as f64).abs(), "{p} {x}");
            }
        }
    }
}
