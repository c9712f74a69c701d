//! Runs a hot loop compiled for the widest vector unit of the CPU it runs on.
//!
//! The crate is built for baseline x86-64 (SSE2), so a generic loop over
//! slices vectorises 4 f32 wide. [`widest`] calls its closure from a function
//! compiled with AVX-512 (or AVX2 + FMA) enabled, chosen at run time, so the
//! closure and everything `#[inline(always)]` it calls is compiled again for
//! that unit. The same binary runs on any x86-64, and the results are the
//! same bits on every path: Rust never contracts `a * b + c` into an FMA, and
//! wider vectors do not reorder any sum written as a sequence of adds.

/// Calls `f`, compiled for AVX-512 or AVX2 + FMA when this CPU has them.
/// `f`'s hot loop must be inside the closure or `#[inline(always)]` callees.
#[inline(always)]
pub fn widest<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the features this function enables were detected above.
            return unsafe { x86::avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { x86::avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,bmi1,bmi2,popcnt,lzcnt,f16c")]
    pub(super) unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,lzcnt,f16c")]
    pub(super) unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::widest;

    /// The dispatched loop gives the bits of the baseline one (sums in a
    /// fixed order, products and exp rounded identically).
    #[test]
    fn the_widest_path_gives_the_baseline_bits() {
        let xs: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1013) as f32 * 0.0137 - 6.0).collect();
        let run = |xs: &[f32]| -> Vec<f32> {
            let mut acc = [0f64; 8];
            let mut out: Vec<f32> = xs.iter().map(|&x| x / (1.0 + super::super::attention::exp(-x))).collect();
            for (i, &v) in out.iter().enumerate() {
                acc[i % 8] += f64::from(v) * 1.5;
            }
            out.push(acc.iter().sum::<f64>() as f32);
            out
        };
        let base = run(&xs);
        let wide = widest(|| run(&xs));
        assert_eq!(
            base.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            wide.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
