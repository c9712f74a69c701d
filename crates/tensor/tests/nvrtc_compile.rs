//! Every `kernels/*.cu` compiles with NVRTC for compute_80 and compute_90
//! (PTX) and for sm_80 and sm_90 (the CUBINs an A100 and an H100 load), with
//! the options the driver uses (`gpu::nvrtc_policy`), with no GPU and no
//! CUDA toolkit: NVRTC comes from the PyPI wheels that
//! `scripts/setup-cuda-wheels.sh` installs (found through LD_LIBRARY_PATH,
//! see `scripts/cuda-env.sh`). Without libnvrtc the test prints why and
//! passes, except under CI=true, where it fails.

/// Writes to the real stderr, past libtest's capture, so the CI log shows
/// the count and any skip reason.
macro_rules! log {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

use diffuse_tensor::gpu::cuda::{nvrtc_available, nvrtc_compile, nvrtc_version, NvrtcTarget};
use diffuse_tensor::gpu::nvrtc_policy::{contracts_fma, NO_FMA_CONTRACTION};
use diffuse_tensor::gpu::sources::KERNEL_FILES;

#[test]
fn every_kernel_file_compiles_with_nvrtc() {
    if let Err(why) = nvrtc_available() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but NVRTC is unavailable: {why}");
        }
        log!("skipped: NVRTC compile test: {why}");
        return;
    }
    let (major, minor) = nvrtc_version().expect("nvrtcVersion");
    assert!(!KERNEL_FILES.is_empty(), "no kernels/*.cu embedded");
    let mut failures = Vec::new();
    let mut kernels = 0;
    for file in KERNEL_FILES {
        let names: Vec<&str> = file.kernels().map(|k| k.name).collect();
        assert!(!names.is_empty(), "{} defines no extern \"C\" __global__ kernel", file.name);
        for arch in ["compute_80", "compute_90"] {
            match nvrtc_compile(file, NvrtcTarget::Ptx(arch)) {
                Ok(ptx) => {
                    let text = String::from_utf8_lossy(&ptx);
                    for k in &names {
                        if !text.contains(&format!(".entry {k}(")) {
                            failures.push(format!("{} ({arch}): kernel {k} missing from the PTX", file.name));
                        }
                    }
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        for arch in ["sm_80", "sm_90"] {
            match nvrtc_compile(file, NvrtcTarget::Cubin(arch)) {
                Ok(cubin) => {
                    if !cubin.starts_with(b"\x7fELF") {
                        failures.push(format!("{} ({arch}): the CUBIN is not an ELF image", file.name));
                    }
                    for k in &names {
                        if !contains(&cubin, format!(".text.{k}\0").as_bytes()) {
                            failures
                                .push(format!("{} ({arch}): kernel {k} has no code section in the CUBIN", file.name));
                        }
                    }
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        kernels += names.len();
    }
    assert!(failures.is_empty(), "NVRTC failures:\n{}", failures.join("\n\n"));
    log!(
        "compiled {} kernel files ({kernels} kernels) for compute_80, compute_90 (PTX), sm_80 and sm_90 (CUBIN) \
         with NVRTC {major}.{minor}",
        KERNEL_FILES.len()
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The files `nvrtc_policy` compiles with `--fmad=false` have only
/// explicitly rounded float arithmetic in their PTX (`mul.rn`, `add.rn`,
/// which ptxas may not fuse; the `fma.rn` of CUDA's own logf/sinf/cosf are
/// explicit), so each line of them rounds as the CPU's does; the others have
/// plain `mul`/`add`, which ptxas contracts into FMAs.
#[test]
fn memory_bound_files_are_compiled_without_contraction() {
    if nvrtc_available().is_err() {
        log!("skipped: contraction test: NVRTC unavailable");
        return;
    }
    let contractible = |ptx: &str| {
        ptx.lines()
            .map(str::trim_start)
            .filter(|l| {
                ["mul.f32", "mul.f64", "add.f32", "add.f64", "sub.f32", "sub.f64"].iter().any(|op| l.starts_with(op))
            })
            .count()
    };
    let mut rounded_files = 0;
    for file in KERNEL_FILES {
        let ptx = nvrtc_compile(file, NvrtcTarget::Ptx("compute_90")).unwrap();
        let n = contractible(&String::from_utf8_lossy(&ptx));
        if contracts_fma(file.name) {
            assert!(n > 0, "{}: no contractible arithmetic found; is the PTX pattern still right?", file.name);
        } else {
            assert_eq!(n, 0, "{}: {n} contractible float operations despite --fmad=false", file.name);
            rounded_files += 1;
        }
    }
    assert_eq!(rounded_files, NO_FMA_CONTRACTION.len());
}

/// The on-disk cache with the real compiler: a miss compiles and stores,
/// the next lookup loads the same image without compiling, and a damaged
/// entry is recompiled over.
#[test]
fn compiled_kernels_are_cached_on_disk() {
    use diffuse_tensor::gpu::cuda::{cache_key, compile_cached};
    use diffuse_tensor::gpu::kernel_cache::KernelCache;
    if nvrtc_available().is_err() {
        log!("skipped: kernel cache test: NVRTC unavailable");
        return;
    }
    let dir = std::env::temp_dir().join(format!("diffuse-kernel-cache-test-{}", std::process::id()));
    let cache = KernelCache::at(&dir);
    let file = KERNEL_FILES.iter().find(|f| f.name == "silu.cu").unwrap();
    let target = NvrtcTarget::Cubin("sm_80");
    let (first, hit) = compile_cached(file, target, Some(&cache)).unwrap();
    assert!(!hit && first.starts_with(b"\x7fELF"));
    let (second, hit) = compile_cached(file, target, Some(&cache)).unwrap();
    assert!(hit, "the second lookup compiled again");
    assert_eq!(first, second);
    // another target is another entry
    assert!(!compile_cached(file, NvrtcTarget::Ptx("compute_80"), Some(&cache)).unwrap().1);
    let path = cache.path(&cache_key(file, target, nvrtc_version().unwrap()));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let (third, hit) = compile_cached(file, target, Some(&cache)).unwrap();
    assert!(!hit, "a damaged entry was used");
    assert!(third.starts_with(b"\x7fELF"));
    assert!(compile_cached(file, target, Some(&cache)).unwrap().1, "the entry was rewritten");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Without libcuda (CI, most laptops) the probe says so and opening a device
/// is an error, never a panic; with a GPU, device 0 opens.
#[test]
fn cuda_probe_and_device_never_panic() {
    let line = diffuse_tensor::gpu::cuda::cuda_probe();
    log!("{line}");
    assert!(line.starts_with("cuda: "));
    match diffuse_tensor::gpu::cuda::cuda_device(0) {
        Ok(dev) => log!("opened {dev}"),
        Err(e) => log!("no CUDA device: {e}"),
    }
}

/// The emulator's WMMA test kernels (crates/emu/tests/kernels/emu_wmma.cu)
/// are real CUDA: NVRTC builds them for sm_80 and sm_90, so the emulator's
/// `nvcuda::wmma` stand-in is tested with code the real API accepts.
#[test]
fn emulator_wmma_test_kernels_compile_with_nvrtc() {
    use diffuse_tensor::gpu::sources::KernelFile;
    if nvrtc_available().is_err() {
        log!("skipped: emulator WMMA kernels: NVRTC unavailable");
        return;
    }
    let file = KernelFile { name: "emu_wmma.cu", source: include_str!("../../emu/tests/kernels/emu_wmma.cu") };
    for arch in ["sm_80", "sm_90"] {
        let cubin = nvrtc_compile(&file, NvrtcTarget::Cubin(arch)).unwrap_or_else(|e| panic!("{arch}: {e}"));
        for k in
            ["emu_test_wmma_gemm_bf16", "emu_test_wmma_gemm_tf32", "emu_test_wmma_tile_bf16", "emu_bug_wmma_misuse"]
        {
            assert!(contains(&cubin, format!(".text.{k}\0").as_bytes()), "{arch}: {k} missing from the CUBIN");
        }
    }
}
