//! What NVRTC is asked for, decided in one place for the driver
//! (`gpu::cuda`), the compile test (`tests/nvrtc_compile.rs`) and
//! `scripts/check-kernels.sh` (through `examples/dump_ptx.rs`), and the
//! check that the NVRTC found can build for the driver found.
//!
//! FMA contraction: NVRTC contracts `a*x + b*y` into fused multiply-adds
//! by default, one rounding where the CPU (and the emulator, built with
//! `-ffp-contract=off`) rounds twice. The memory-bound files gain nothing
//! from it, so they are compiled with `--fmad=false` and their arithmetic is
//! the CPU's expression by expression (ARCHITECTURE.md, "Determinism across
//! devices"). The compute-bound files (attention, conv2d, group_norm, linear)
//! keep contraction; they are compared with tolerances anyway, since their
//! summation orders differ from the CPU's. The tensor-core files (`*_tc.cu`)
//! do their GEMM arithmetic in `mma`; the rest (the bias add, attention's
//! softmax and score gradients) is rounded as written, as the oracle's
//! bounds assume.

/// Files compiled with `--fmad=false`.
pub const NO_FMA_CONTRACTION: &[&str] = &[
    "attention_tc.cu",
    "cast.cu",
    "conv2d_bwd_data_tc.cu",
    "conv2d_bwd_weight_tc.cu",
    "conv2d_fwd_tc.cu",
    "dropout.cu",
    "elementwise.cu",
    "embedding.cu",
    "layout.cu",
    "linear_bwd_tc.cu",
    "linear_fwd_tc.cu",
    "loss.cu",
    "noise.cu",
    "optim.cu",
    "reduce.cu",
    "sampling.cu",
    "silu.cu",
];

/// Files that keep NVRTC's default contraction (compute-bound).
pub const FMA_CONTRACTION: &[&str] = &["attention.cu", "conv2d.cu", "group_norm.cu", "linear.cu"];

/// Whether `file` (a `kernels/` file name such as `noise.cu`) is compiled
/// with FMA contraction. A file in neither list contracts (NVRTC's default);
/// a unit test keeps every embedded file in one of the lists.
pub fn contracts_fma(file: &str) -> bool {
    !NO_FMA_CONTRACTION.contains(&file)
}

/// The NVRTC options particular to `file` (the common ones and the
/// architecture come from `cuda::nvrtc_options`).
pub fn file_options(file: &str) -> Vec<String> {
    if contracts_fma(file) {
        Vec::new()
    } else {
        vec!["--fmad=false".to_string()]
    }
}

/// A CUDA version as the driver and NVRTC report it: (major, minor).
pub type CudaVersion = (i32, i32);

/// `cuDriverGetVersion`'s integer (1000 * major + 10 * minor) as (major, minor).
pub fn driver_version_from_int(v: i32) -> CudaVersion {
    (v / 1000, (v % 1000) / 10)
}

/// Ok when what NVRTC `nvrtc` builds can be loaded by a driver that
/// supports CUDA up to `driver`; otherwise the error to show, naming both
/// versions (the driver itself would only say
/// CUDA_ERROR_UNSUPPORTED_PTX_VERSION or CUDA_ERROR_INVALID_IMAGE). PTX is
/// JIT-compiled by the driver, which refuses any newer PTX ISA, so for PTX
/// (`jit`) NVRTC may be no newer than the driver; a CUBIN from a newer minor
/// release of the same major loads (CUDA's minor-version compatibility).
pub fn check_nvrtc_vs_driver(nvrtc: CudaVersion, driver: CudaVersion, jit: bool) -> Result<(), String> {
    let ok = if jit { nvrtc <= driver } else { nvrtc.0 <= driver.0 };
    if ok {
        return Ok(());
    }
    let what = if jit { "PTX" } else { "CUBINs" };
    Err(format!(
        "NVRTC {}.{} is newer than the NVIDIA driver, which supports CUDA up to {}.{}: the {what} it builds would \
         not load. Update the driver, or put an NVRTC of CUDA {}.{} or older first on LD_LIBRARY_PATH",
        nvrtc.0, nvrtc.1, driver.0, driver.1, driver.0, driver.1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::sources::KERNEL_FILES;

    #[test]
    fn every_kernel_file_has_a_contraction_decision() {
        for f in KERNEL_FILES {
            let listed = NO_FMA_CONTRACTION.contains(&f.name) as u8 + FMA_CONTRACTION.contains(&f.name) as u8;
            assert_eq!(listed, 1, "{}: put it in exactly one of NO_FMA_CONTRACTION / FMA_CONTRACTION", f.name);
        }
        for name in NO_FMA_CONTRACTION.iter().chain(FMA_CONTRACTION) {
            assert!(KERNEL_FILES.iter().any(|f| f.name == *name), "{name} is listed but not a kernel file");
        }
        assert_eq!(file_options("noise.cu"), ["--fmad=false"]);
        assert!(file_options("conv2d.cu").is_empty());
    }

    #[test]
    fn driver_versions_decode() {
        assert_eq!(driver_version_from_int(12040), (12, 4));
        assert_eq!(driver_version_from_int(13000), (13, 0));
        assert_eq!(driver_version_from_int(11080), (11, 8));
    }

    #[test]
    fn a_newer_nvrtc_than_the_driver_is_refused_naming_both() {
        for jit in [true, false] {
            assert!(check_nvrtc_vs_driver((12, 4), (12, 4), jit).is_ok());
            assert!(check_nvrtc_vs_driver((12, 4), (12, 8), jit).is_ok());
            assert!(check_nvrtc_vs_driver((12, 9), (13, 0), jit).is_ok());
            let e = check_nvrtc_vs_driver((13, 0), (12, 8), jit).unwrap_err();
            assert!(e.starts_with("NVRTC 13.0 is newer than the NVIDIA driver, which supports CUDA up to 12.8"), "{e}");
        }
        // a newer minor: PTX is refused, a CUBIN loads
        let e = check_nvrtc_vs_driver((12, 9), (12, 4), true).unwrap_err();
        assert!(e.contains("NVRTC 12.9") && e.contains("up to 12.4") && e.contains("PTX"), "{e}");
        assert!(check_nvrtc_vs_driver((12, 9), (12, 4), false).is_ok());
    }
}
