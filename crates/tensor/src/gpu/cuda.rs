//! The real-GPU [`GpuDriver`]: CUDA through cudarc 0.19's driver API, with
//! `kernels/*.cu` compiled by NVRTC at first use for the device's own
//! architecture and cached for the process.
//!
//! libcuda and libnvrtc are loaded at run time (`dynamic-loading`), so the
//! crate builds and runs everywhere; without them [`cuda_device`] returns a
//! clear error and [`cuda_probe`] says what is missing. cudarc panics when a
//! library it needs is absent, so every entry point checks
//! `is_culib_present()` first.
//!
//! Memory is plain `cuMemAlloc` behind the device's caching allocator
//! (`gpu::pool`); kernels are loaded as cudarc `CudaModule`/`CudaFunction`s
//! and launched through cudarc's launch builder on the device's compute
//! stream (non-blocking), where copies and memsets are queued too
//! (`cuMemcpy*Async`), so a copy after a launch sees its results; only a
//! copy to the host and `synchronize` make the host wait, and launch errors
//! surface there. A second non-blocking stream, the copy stream, carries
//! the next batch's upload beside the step's kernels; events
//! (`cuEventRecord` + `cuStreamWaitEvent`) order it with the compute stream.

use super::debug::DeferredErrors;
use super::kernel_cache::{CacheKey, KernelCache};
use super::kernels::Kernel;
use super::sources::{self, KernelFile};
use super::{GpuDevice, GpuDriver, KernelArg, Launch, Stream};
use crate::{Device, Result, TensorError};
use cudarc::driver::{
    result as cu, sys as cusys, CudaContext, CudaFunction, CudaModule, CudaStream, DriverError, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::sys as nvsys;
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::sync::{Arc, Mutex, OnceLock};

/// What NVRTC should produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NvrtcTarget {
    /// PTX for a virtual architecture, such as `compute_90`.
    Ptx(&'static str),
    /// A CUBIN for a real architecture, such as `sm_90`.
    Cubin(&'static str),
}

impl NvrtcTarget {
    fn arch(&self) -> &'static str {
        match self {
            NvrtcTarget::Ptx(a) | NvrtcTarget::Cubin(a) => a,
        }
    }
}

fn nvrtc_err(what: &str, r: nvsys::nvrtcResult) -> TensorError {
    TensorError::Nvrtc(format!("{what}: {r:?}"))
}

/// Ok when libnvrtc can be loaded; otherwise why not.
pub fn nvrtc_available() -> std::result::Result<(), String> {
    // SAFETY: only tries to dlopen the candidate library names.
    if unsafe { nvsys::is_culib_present() } {
        Ok(())
    } else {
        Err("libnvrtc not found (libnvrtc.so.13 or .12): install the CUDA toolkit or run \
             `bash scripts/setup-cuda-wheels.sh` and `source scripts/cuda-env.sh` (sets LD_LIBRARY_PATH)"
            .into())
    }
}

/// NVRTC's (major, minor) version, when libnvrtc loads.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    nvrtc_available().ok()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; the out-pointers are valid locals.
    let r = unsafe { nvsys::nvrtcVersion(&mut major, &mut minor) };
    (r == nvsys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// The real architectures (such as 90 for sm_90) this NVRTC can build for.
pub fn nvrtc_supported_archs() -> Result<Vec<i32>> {
    nvrtc_available().map_err(TensorError::Nvrtc)?;
    let mut n = 0;
    // SAFETY: library present; out-pointers are valid and sized from the count.
    unsafe {
        let r = nvsys::nvrtcGetNumSupportedArchs(&mut n);
        if r != nvsys::nvrtcResult::NVRTC_SUCCESS {
            return Err(nvrtc_err("nvrtcGetNumSupportedArchs", r));
        }
        let mut archs = vec![0i32; n.max(0) as usize];
        let r = nvsys::nvrtcGetSupportedArchs(archs.as_mut_ptr());
        if r != nvsys::nvrtcResult::NVRTC_SUCCESS {
            return Err(nvrtc_err("nvrtcGetSupportedArchs", r));
        }
        Ok(archs)
    }
}

/// The NVRTC options of kernel file `file` (such as `noise.cu`) for
/// `target`. No fast math: the kernels call logf/expf/sinf/cosf and expect
/// the accurate versions (Philox normals must stay within an ulp of the
/// CPU's); the memory-bound files add `--fmad=false` (`nvrtc_policy`).
pub fn nvrtc_options(file: &str, target: NvrtcTarget) -> Vec<String> {
    let mut opts = vec![format!("--gpu-architecture={}", target.arch()), "--std=c++17".to_string()];
    opts.extend(super::nvrtc_policy::file_options(file));
    // a search path (dirs separated by ':'): the CUDA headers, and for the
    // tensor-core files the directory of crt/mma.h (the toolkit's include/
    // holds both; the PyPI wheels split them, see scripts/cuda-env.sh)
    if let Some(list) = std::env::var_os("DIFFUSE_NVRTC_INCLUDE") {
        for inc in std::env::split_paths(&list).filter(|p| p.is_dir()) {
            opts.push(format!("--include-path={}", inc.display()));
        }
    }
    opts
}

/// Compiles one kernel file with NVRTC, the `kernels/*.cuh` headers provided
/// as include headers. Returns the PTX text (NUL-terminated, as the driver
/// loads it) or the CUBIN image. A compile error carries NVRTC's log.
pub fn nvrtc_compile(file: &KernelFile, target: NvrtcTarget) -> Result<Vec<u8>> {
    nvrtc_available().map_err(TensorError::Nvrtc)?;
    let cstr = |s: &str| CString::new(s).map_err(|_| TensorError::Nvrtc(format!("{}: NUL byte in source", file.name)));
    let src = cstr(file.source)?;
    let name = cstr(file.name)?;
    let headers: Vec<CString> = sources::KERNEL_HEADERS.iter().map(|h| cstr(h.source)).collect::<Result<_>>()?;
    let include_names: Vec<CString> = sources::KERNEL_HEADERS.iter().map(|h| cstr(h.name)).collect::<Result<_>>()?;
    let header_ptrs: Vec<*const c_char> = headers.iter().map(|h| h.as_ptr()).collect();
    let name_ptrs: Vec<*const c_char> = include_names.iter().map(|h| h.as_ptr()).collect();
    let opts: Vec<CString> = nvrtc_options(file.name, target).iter().map(|o| cstr(o)).collect::<Result<_>>()?;
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();

    // SAFETY: every pointer handed to NVRTC points into a CString above that
    // outlives the program; output buffers are sized from NVRTC's answers.
    unsafe {
        let mut prog: nvsys::nvrtcProgram = std::ptr::null_mut();
        let r = nvsys::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            header_ptrs.len() as i32,
            header_ptrs.as_ptr(),
            name_ptrs.as_ptr(),
        );
        if r != nvsys::nvrtcResult::NVRTC_SUCCESS {
            return Err(nvrtc_err(&format!("creating the program for {}", file.name), r));
        }
        let result = (|| {
            let r = nvsys::nvrtcCompileProgram(prog, opt_ptrs.len() as i32, opt_ptrs.as_ptr());
            if r != nvsys::nvrtcResult::NVRTC_SUCCESS {
                let mut size = 0usize;
                let mut log = String::new();
                if nvsys::nvrtcGetProgramLogSize(prog, &mut size) == nvsys::nvrtcResult::NVRTC_SUCCESS && size > 1 {
                    let mut buf = vec![0 as c_char; size];
                    if nvsys::nvrtcGetProgramLog(prog, buf.as_mut_ptr()) == nvsys::nvrtcResult::NVRTC_SUCCESS {
                        log = CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
                    }
                }
                return Err(TensorError::Nvrtc(format!(
                    "compiling {} for {} failed ({r:?}):\n{}",
                    file.name,
                    target.arch(),
                    log.trim_end()
                )));
            }
            let mut size = 0usize;
            let (r, image) = match target {
                NvrtcTarget::Ptx(_) => {
                    let r = nvsys::nvrtcGetPTXSize(prog, &mut size);
                    if r != nvsys::nvrtcResult::NVRTC_SUCCESS {
                        return Err(nvrtc_err("nvrtcGetPTXSize", r));
                    }
                    let mut buf = vec![0u8; size];
                    (nvsys::nvrtcGetPTX(prog, buf.as_mut_ptr() as *mut c_char), buf)
                }
                NvrtcTarget::Cubin(_) => {
                    let r = nvsys::nvrtcGetCUBINSize(prog, &mut size);
                    if r != nvsys::nvrtcResult::NVRTC_SUCCESS {
                        return Err(nvrtc_err("nvrtcGetCUBINSize", r));
                    }
                    let mut buf = vec![0u8; size];
                    (nvsys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char), buf)
                }
            };
            if r != nvsys::nvrtcResult::NVRTC_SUCCESS {
                return Err(nvrtc_err("fetching the compiled image", r));
            }
            Ok(image)
        })();
        nvsys::nvrtcDestroyProgram(&mut prog);
        result
    }
}

/// Compiled images for the process, by (file, target): a second device or
/// driver of the same architecture compiles nothing.
type ImageCache = Mutex<HashMap<(&'static str, NvrtcTarget), Arc<Vec<u8>>>>;

fn compiled(file: &'static KernelFile, target: NvrtcTarget) -> Result<Arc<Vec<u8>>> {
    static CACHE: OnceLock<ImageCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(img) = cache.lock().unwrap().get(&(file.name, target)) {
        return Ok(img.clone());
    }
    // compile outside the lock: other files may compile meanwhile
    static DISK: OnceLock<Option<KernelCache>> = OnceLock::new();
    let disk = DISK.get_or_init(KernelCache::from_env);
    let img = Arc::new(compile_cached(file, target, disk.as_ref())?.0);
    cache.lock().unwrap().insert((file.name, target), img.clone());
    Ok(img)
}

/// The on-disk cache key of `file` compiled for `target` by NVRTC `nvrtc`:
/// its source, every header, the options and the version.
pub fn cache_key(file: &KernelFile, target: NvrtcTarget, nvrtc: (i32, i32)) -> CacheKey {
    let headers: Vec<(&str, &str)> = sources::KERNEL_HEADERS.iter().map(|h| (h.name, h.source)).collect();
    let (arch, kind) = match target {
        NvrtcTarget::Ptx(a) => (a, "ptx"),
        NvrtcTarget::Cubin(a) => (a, "cubin"),
    };
    CacheKey::new(file.name, file.source, &headers, &nvrtc_options(file.name, target), arch, kind, nvrtc)
}

/// NVRTC's image of `file` for `target`, from `cache` when it holds an
/// intact entry (then the flag is true), else compiled and stored there.
pub fn compile_cached(file: &KernelFile, target: NvrtcTarget, cache: Option<&KernelCache>) -> Result<(Vec<u8>, bool)> {
    let Some(cache) = cache else {
        return Ok((nvrtc_compile(file, target)?, false));
    };
    let nvrtc = nvrtc_version().ok_or_else(|| TensorError::Nvrtc("nvrtcVersion failed".into()))?;
    cache.get_or_compile(&cache_key(file, target, nvrtc), || nvrtc_compile(file, target))
}

fn leak_str(s: String) -> &'static str {
    // a handful of architecture names per process
    static NAMES: OnceLock<Mutex<Vec<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    let mut names = names.lock().unwrap();
    if let Some(n) = names.iter().find(|n| **n == s) {
        return n;
    }
    let n: &'static str = Box::leak(s.into_boxed_str());
    names.push(n);
    n
}

/// The NVRTC target for a device of compute capability (major, minor): a
/// CUBIN for its own sm_XY when NVRTC knows it, else PTX for the newest
/// architecture NVRTC supports (the driver JIT-compiles it forward).
pub fn target_for(major: i32, minor: i32) -> Result<NvrtcTarget> {
    let want = major * 10 + minor;
    let archs = nvrtc_supported_archs()?;
    if archs.contains(&want) {
        return Ok(NvrtcTarget::Cubin(leak_str(format!("sm_{want}"))));
    }
    match archs.iter().copied().filter(|&a| a <= want).max() {
        Some(a) => Ok(NvrtcTarget::Ptx(leak_str(format!("compute_{a}")))),
        None => Err(TensorError::Nvrtc(format!(
            "this NVRTC supports {archs:?}, nothing for the device's sm_{want}: install a matching CUDA"
        ))),
    }
}

/// The CUDA version the driver supports, from `cuDriverGetVersion`.
fn driver_cuda_version() -> Result<super::nvrtc_policy::CudaVersion> {
    let mut v = 0;
    // SAFETY: libcuda is loaded and initialised; the out-pointer is a local.
    let r = unsafe { cusys::cuDriverGetVersion(&mut v) };
    if r != cusys::cudaError_enum::CUDA_SUCCESS {
        return Err(TensorError::Cuda(format!("cuDriverGetVersion: {r:?}")));
    }
    Ok(super::nvrtc_policy::driver_version_from_int(v))
}

/// Errors, naming both versions, when this NVRTC builds `target` code the
/// driver cannot load.
fn check_nvrtc_against_driver(target: NvrtcTarget) -> Result<()> {
    let nvrtc = nvrtc_version().ok_or_else(|| TensorError::Nvrtc("nvrtcVersion failed".into()))?;
    let jit = matches!(target, NvrtcTarget::Ptx(_));
    super::nvrtc_policy::check_nvrtc_vs_driver(nvrtc, driver_cuda_version()?, jit).map_err(TensorError::Nvrtc)
}

fn drv(what: &str, e: DriverError) -> TensorError {
    TensorError::Cuda(format!("{what}: {:?}", e.0))
}

/// A loaded kernel and the dynamic shared memory it has been opened up to
/// (48 KiB until a launch asks for more).
struct Function {
    f: CudaFunction,
    max_dynamic_smem: u32,
}

/// Modules by file and functions by kernel name, loaded at first use.
#[derive(Default)]
struct Loaded {
    modules: HashMap<&'static str, Arc<CudaModule>>,
    functions: HashMap<&'static str, Function>,
}

/// One CUDA device through the driver API.
pub struct CudaDriver {
    ctx: Arc<CudaContext>,
    /// The device's compute stream: every launch and copy is ordered on it,
    /// except the uploads queued on `copy_stream`.
    stream: Arc<CudaStream>,
    /// The communication stream (NCCL's all-reduces beside the backward),
    /// made at first use.
    comm_stream: OnceLock<Arc<CudaStream>>,
    /// The copy stream (non-blocking): the next batch's upload runs here
    /// while the compute stream runs the current step; events order the two.
    copy_stream: Arc<CudaStream>,
    label: String,
    target: NvrtcTarget,
    capability: (u32, u32),
    max_dynamic_smem: u32,
    loaded: Mutex<Loaded>,
    /// Results of frees (from Drop), returned by the next fallible call.
    deferred: DeferredErrors,
}

impl CudaDriver {
    /// Opens device `ordinal`; errors (never panics) when libcuda, the
    /// device or libnvrtc is missing.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only tries to dlopen the candidate library names.
        if !unsafe { cusys::is_culib_present() } {
            return Err(TensorError::Cuda("libcuda.so could not be loaded (no NVIDIA driver on this machine)".into()));
        }
        cu::init().map_err(|e| drv("cuInit", e))?;
        let count = cu::device::get_count().map_err(|e| drv("cuDeviceGetCount", e))?;
        if count <= 0 {
            return Err(TensorError::Cuda("the CUDA driver found no device".into()));
        }
        if ordinal >= count as usize {
            return Err(TensorError::Cuda(format!("no device cuda:{ordinal}: {count} device(s) found")));
        }
        nvrtc_available().map_err(TensorError::Nvrtc)?;
        let ctx = CudaContext::new(ordinal).map_err(|e| drv("creating the context", e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| drv("compute capability", e))?;
        let target = target_for(major, minor)?;
        check_nvrtc_against_driver(target)?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        // the opt-in maximum of a block: launch code sizes tiles by it
        let max_dynamic_smem = ctx
            .attribute(cusys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(|e| drv("querying the opt-in shared memory per block", e))?
            .max(0) as u32;
        // The device's one stream (non-blocking): kernels and copies are
        // queued on it in order; the host waits only in dtoh and synchronize.
        let stream = ctx.new_stream().map_err(|e| drv("creating the stream", e))?;
        let copy_stream = ctx.new_stream().map_err(|e| drv("creating the copy stream", e))?;
        Ok(CudaDriver {
            ctx,
            stream,
            comm_stream: OnceLock::new(),
            copy_stream,
            label: format!("cuda:{ordinal} ({name}, sm_{major}{minor})"),
            target,
            capability: (major.max(0) as u32, minor.max(0) as u32),
            max_dynamic_smem,
            loaded: Mutex::new(Loaded::default()),
            deferred: DeferredErrors::default(),
        })
    }

    /// The CUstream of one of the device's streams.
    fn cu_stream(&self, stream: Stream) -> cusys::CUstream {
        match stream {
            Stream::Compute => self.stream.cu_stream(),
            Stream::Copy => self.copy_stream.cu_stream(),
        }
    }

    /// Binds the context to this thread; first returns any error a free
    /// kept (every fallible call starts here).
    fn bind(&self) -> Result<()> {
        self.deferred.take()?;
        self.ctx.bind_to_thread().map_err(|e| drv("binding the context", e))
    }

    /// The loaded function of `kernel`, compiling and loading its file at
    /// first use.
    fn function<'l>(&self, loaded: &'l mut Loaded, kernel: &'static Kernel) -> Result<&'l mut Function> {
        if !loaded.functions.contains_key(kernel.name) {
            let file = sources::file_of(kernel).ok_or_else(|| TensorError::Launch {
                kernel: kernel.name.into(),
                msg: format!("kernels/{} is not embedded in this build", kernel.file),
            })?;
            let module = match loaded.modules.get(file.name) {
                Some(m) => m.clone(),
                None => {
                    let mut image = (*compiled(file, self.target)?).clone();
                    if matches!(self.target, NvrtcTarget::Ptx(_)) && image.last() != Some(&0) {
                        image.push(0); // cuModuleLoadData reads PTX as a C string
                    }
                    let m = self
                        .ctx
                        .load_module(Ptx::from_binary(image))
                        .map_err(|e| drv(&format!("loading {} ({})", file.name, self.target.arch()), e))?;
                    loaded.modules.insert(file.name, m.clone());
                    m
                }
            };
            let f = module.load_function(kernel.name).map_err(|e| drv(&format!("finding {kernel}"), e))?;
            loaded.functions.insert(kernel.name, Function { f, max_dynamic_smem: 48 * 1024 });
        }
        Ok(loaded.functions.get_mut(kernel.name).expect("inserted above"))
    }
}

impl GpuDriver for CudaDriver {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn compute_capability(&self) -> Option<(u32, u32)> {
        Some(self.capability)
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        self.bind()?;
        // SAFETY: plain allocation; the contents are unspecified by contract.
        unsafe { cu::malloc_sync(bytes.max(1)) }.map_err(|e| {
            if e.0 == cusys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
                let (free, total) = cu::mem_get_info().unwrap_or((0, 0));
                TensorError::Cuda(format!(
                    "out of GPU memory allocating {bytes} bytes on {} ({free} of {total} bytes free)",
                    self.label
                ))
            } else {
                drv(&format!("allocating {bytes} bytes"), e)
            }
        })
    }

    fn free(&self, ptr: u64) {
        // cuMemFree is often where an earlier kernel's fault surfaces: keep it.
        if let Err(e) = self.ctx.bind_to_thread() {
            self.deferred.record(format!("binding the context to free {ptr:#x}: {:?}", e.0));
            return;
        }
        // SAFETY: `ptr` came from `alloc` and is freed once (GpuBuffer's Drop).
        if let Err(e) = unsafe { cu::free_sync(ptr) } {
            self.deferred.record(format!("cuMemFree({ptr:#x}): {:?}", e.0));
        }
    }

    fn htod(&self, src: &[u8], dst: u64) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: the caller's buffer holds at least src.len() bytes; from
        // pageable memory the driver stages it before returning, so the
        // caller may drop it at once (no device synchronisation).
        unsafe { cu::memcpy_htod_async(dst, src, self.stream.cu_stream()) }.map_err(|e| drv("copy to the device", e))
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: the caller's buffer holds at least dst.len() bytes and is
        // not touched until the stream has finished the copy (synchronised below).
        unsafe { cu::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }.map_err(|e| drv("copy to the host", e))?;
        self.stream.synchronize().map_err(|e| drv("waiting for a copy to the host", e))
    }

    fn dtod(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: both buffers hold at least `bytes` bytes (caller's contract).
        unsafe { cu::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(|e| drv("device-to-device copy", e))
    }

    fn memset_zero(&self, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: the buffer holds at least `bytes` bytes (caller's contract).
        unsafe { cu::memset_d8_async(dst, 0, bytes, self.stream.cu_stream()) }.map_err(|e| drv("memset", e))
    }

    fn launch(&self, l: &Launch<'_>) -> Result<()> {
        let launch_err = |msg: String| TensorError::Launch { kernel: l.kernel.name.into(), msg };
        let (g, b) = (l.grid, l.block);
        if g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0 {
            return Err(launch_err(format!("empty grid {g:?} or block {b:?}")));
        }
        if b.x as u64 * b.y as u64 * b.z as u64 > 1024 {
            return Err(launch_err(format!("block {b:?} has more than 1024 threads")));
        }
        if l.shared_bytes > self.max_dynamic_smem {
            return Err(launch_err(format!(
                "{} bytes of dynamic shared memory, the device allows {}",
                l.shared_bytes, self.max_dynamic_smem
            )));
        }
        self.bind()?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let func = self.function(&mut loaded, l.kernel)?;
        if l.shared_bytes > func.max_dynamic_smem {
            func.f
                .set_attribute(
                    cusys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    l.shared_bytes as i32,
                )
                .map_err(|e| drv(&format!("opening {} to {} bytes of shared memory", l.kernel, l.shared_bytes), e))?;
            func.max_dynamic_smem = l.shared_bytes;
        }
        // Arguments were checked against the kernel's parameters by
        // `GpuDevice::launch`; each is pushed by reference with its own type.
        let mut builder = self.stream.launch_builder(&func.f);
        for a in l.args {
            match a {
                KernelArg::Ptr(p) | KernelArg::PtrBf16(p) | KernelArg::U64(p) => builder.arg(p),
                KernelArg::I32(i) => builder.arg(i),
                KernelArg::U32(u) => builder.arg(u),
                KernelArg::F32(f) => builder.arg(f),
            };
        }
        let cfg =
            LaunchConfig { grid_dim: (g.x, g.y, g.z), block_dim: (b.x, b.y, b.z), shared_mem_bytes: l.shared_bytes };
        // SAFETY: the arguments match the kernel's parameter kinds (checked)
        // and every pointer is a live device allocation of the caller's.
        unsafe { builder.launch(cfg) }
            .map(|_| ())
            .map_err(|e| launch_err(format!("{:?} (grid {g:?}, block {b:?}, {} shared bytes)", e.0, l.shared_bytes)))
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.stream.synchronize().map_err(|e| drv("synchronize", e))?;
        cu::ctx::synchronize().map_err(|e| drv("synchronize", e))
    }

    fn max_shared_bytes(&self) -> u32 {
        self.max_dynamic_smem
    }

    fn mem_info(&self) -> Option<(usize, usize)> {
        self.bind().ok()?;
        cu::mem_get_info().ok()
    }

    fn bind_cuda_stream(&self) -> Result<Option<usize>> {
        self.bind()?;
        Ok(Some(self.stream.cu_stream() as usize))
    }

    fn comm_stream_after_compute(&self) -> Result<Option<usize>> {
        self.bind()?;
        let comm = match self.comm_stream.get() {
            Some(s) => s,
            None => {
                let s = self.ctx.new_stream().map_err(|e| drv("creating the communication stream", e))?;
                self.comm_stream.get_or_init(|| s)
            }
        };
        // an event on the compute stream, waited for by the communication stream
        comm.join(&self.stream).map_err(|e| drv("ordering the communication stream after the compute stream", e))?;
        Ok(Some(comm.cu_stream() as usize))
    }

    fn compute_after_comm(&self) -> Result<()> {
        let Some(comm) = self.comm_stream.get() else { return Ok(()) };
        self.bind()?;
        self.stream.join(comm).map_err(|e| drv("ordering the compute stream after the communication stream", e))
    }

    fn host_alloc(&self, bytes: usize) -> Result<u64> {
        self.bind()?;
        // SAFETY: plain page-locked allocation (flags 0: portable to this context).
        let p = unsafe { cu::malloc_host(bytes.max(1), 0) }.map_err(|e| drv("cuMemHostAlloc", e))?;
        Ok(p as u64)
    }

    unsafe fn host_free(&self, ptr: u64, _bytes: usize) {
        if let Err(e) = self.ctx.bind_to_thread() {
            self.deferred.record(format!("binding the context to free pinned {ptr:#x}: {:?}", e.0));
            return;
        }
        // SAFETY: the caller's contract: from host_alloc, freed once.
        if let Err(e) = unsafe { cu::free_host(ptr as *mut std::ffi::c_void) } {
            self.deferred.record(format!("cuMemFreeHost({ptr:#x}): {:?}", e.0));
        }
    }

    unsafe fn htod_async(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        // SAFETY: the caller's contract.
        unsafe { self.htod_async_on(Stream::Compute, src, dst, bytes) }
    }

    unsafe fn htod_async_on(&self, stream: Stream, src: u64, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: the caller's contract: `src` is pinned, holds `bytes` bytes
        // and is not written before an event recorded after this copy
        // completes; work on the other stream touching `dst` is ordered by events.
        unsafe {
            cusys::cuMemcpyHtoDAsync_v2(dst, src as *const std::ffi::c_void, bytes, self.cu_stream(stream)).result()
        }
        .map_err(|e| drv("asynchronous copy to the device", e))
    }

    fn event_record(&self) -> Result<u64> {
        self.event_record_on(Stream::Compute)
    }

    fn event_record_on(&self, stream: Stream) -> Result<u64> {
        self.bind()?;
        let ev = cu::event::create(cusys::CUevent_flags::CU_EVENT_DEFAULT).map_err(|e| drv("cuEventCreate", e))?;
        // SAFETY: a fresh event and one of the device's live streams.
        if let Err(e) = unsafe { cu::event::record(ev, self.cu_stream(stream)) } {
            // SAFETY: created above, destroyed once.
            let _ = unsafe { cu::event::destroy(ev) };
            return Err(drv("cuEventRecord", e));
        }
        Ok(ev as u64)
    }

    fn stream_wait_event(&self, stream: Stream, event: u64) -> Result<()> {
        self.bind()?;
        // SAFETY: `event` came from event_record_on and is not destroyed yet
        // (a recorded event may be destroyed while a wait on it is queued).
        unsafe {
            cu::stream::wait_event(
                self.cu_stream(stream),
                event as cusys::CUevent,
                cusys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
            )
        }
        .map_err(|e| drv("cuStreamWaitEvent", e))
    }

    fn event_wait(&self, event: u64) -> Result<()> {
        self.bind()?;
        // SAFETY: `event` came from event_record and is not destroyed yet.
        unsafe { cu::event::synchronize(event as cusys::CUevent) }.map_err(|e| drv("cuEventSynchronize", e))
    }

    fn event_elapsed_ms(&self, start: u64, end: u64) -> Result<Option<f32>> {
        self.bind()?;
        // SAFETY: both from event_record on this stream, not destroyed.
        let ms = unsafe { cu::event::elapsed(start as cusys::CUevent, end as cusys::CUevent) }
            .map_err(|e| drv("cuEventElapsedTime", e))?;
        Ok(Some(ms))
    }

    fn begin_native_capture(&self) -> Result<bool> {
        self.bind()?;
        let mode = cusys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
        // SAFETY: the device's live stream; relaxed mode lets the caching
        // allocator call cuMemAlloc while capturing.
        unsafe { cu::stream::begin_capture(self.stream.cu_stream(), mode) }
            .map_err(|e| drv("cuStreamBeginCapture", e))?;
        Ok(true)
    }

    fn end_native_capture(&self) -> Result<u64> {
        self.bind()?;
        // SAFETY: the stream is capturing (begin_native_capture).
        let graph =
            unsafe { cu::stream::end_capture(self.stream.cu_stream()) }.map_err(|e| drv("cuStreamEndCapture", e))?;
        // SAFETY: a graph just captured; the executable graph keeps what it needs.
        let exec = unsafe { cu::graph::instantiate(graph, cusys::CUgraphInstantiate_flags(0)) };
        // SAFETY: destroyed once, after instantiation.
        let _ = unsafe { cu::graph::destroy(graph) };
        Ok(exec.map_err(|e| drv("cuGraphInstantiate", e))? as u64)
    }

    fn graph_launch(&self, exec: u64) -> Result<()> {
        self.bind()?;
        // SAFETY: `exec` came from end_native_capture and is not destroyed.
        unsafe { cu::graph::launch(exec as cusys::CUgraphExec, self.stream.cu_stream()) }
            .map_err(|e| drv("cuGraphLaunch", e))
    }

    fn graph_destroy(&self, exec: u64) {
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        // SAFETY: from end_native_capture, destroyed once (GpuGraph's Drop).
        if let Err(e) = unsafe { cu::graph::exec_destroy(exec as cusys::CUgraphExec) } {
            self.deferred.record(format!("cuGraphExecDestroy: {:?}", e.0));
        }
    }

    fn event_destroy(&self, event: u64) {
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        // SAFETY: from event_record, destroyed once.
        if let Err(e) = unsafe { cu::event::destroy(event as cusys::CUevent) } {
            self.deferred.record(format!("cuEventDestroy: {:?}", e.0));
        }
    }
}

/// CUDA device `ordinal` as a tensor [`Device`].
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    Ok(Device::Gpu(GpuDevice::new(Arc::new(CudaDriver::new(ordinal)?))?))
}

/// The number of CUDA devices, or why there are none (`--gpus all`).
pub fn cuda_device_count() -> Result<usize> {
    // SAFETY: only tries to dlopen the candidate library names.
    if !unsafe { cusys::is_culib_present() } {
        return Err(TensorError::Cuda("libcuda.so could not be loaded (no NVIDIA driver on this machine)".into()));
    }
    cu::init().map_err(|e| drv("cuInit", e))?;
    let count = cu::device::get_count().map_err(|e| drv("cuDeviceGetCount", e))?;
    Ok(count.max(0) as usize)
}

/// One line for `diffuse info`: the CUDA devices found, or why there are none.
pub fn cuda_probe() -> String {
    let nvrtc = match nvrtc_version() {
        Some((a, b)) => format!("NVRTC {a}.{b}"),
        None => "NVRTC not found (libnvrtc.so.13/.12; see scripts/setup-cuda-wheels.sh)".into(),
    };
    // SAFETY: only tries to dlopen the candidate library names.
    if !unsafe { cusys::is_culib_present() } {
        return format!("cuda: no CUDA driver (libcuda.so not found); {nvrtc}");
    }
    if let Err(e) = cu::init() {
        return format!("cuda: the CUDA driver failed to initialise ({:?}); {nvrtc}", e.0);
    }
    let mut version = 0;
    // SAFETY: libcuda is present and initialised; the out-pointer is a local.
    let driver = if unsafe { cusys::cuDriverGetVersion(&mut version) } == cusys::cudaError_enum::CUDA_SUCCESS {
        format!("driver {}.{}", version / 1000, (version % 1000) / 10)
    } else {
        "driver version unknown".into()
    };
    let count = match cu::device::get_count() {
        Ok(c) => c,
        Err(e) => return format!("cuda: {driver}, counting devices failed ({:?}); {nvrtc}", e.0),
    };
    if count <= 0 {
        return format!("cuda: {driver}, no device found; {nvrtc}");
    }
    let devices: Vec<String> = (0..count)
        .map(|i| {
            let Ok(dev) = cu::device::get(i) else { return format!("cuda:{i} (unreadable)") };
            let name = cu::device::get_name(dev).unwrap_or_else(|_| "unknown".into());
            // SAFETY: `dev` came from cuDeviceGet.
            let (major, minor, mem) = unsafe {
                (
                    cu::device::get_attribute(
                        dev,
                        cusys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                    )
                    .unwrap_or(0),
                    cu::device::get_attribute(
                        dev,
                        cusys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                    )
                    .unwrap_or(0),
                    cu::device::total_mem(dev).unwrap_or(0),
                )
            };
            format!("cuda:{i} {name} (sm_{major}{minor}, {:.1} GiB)", mem as f64 / (1u64 << 30) as f64)
        })
        .collect();
    format!("cuda: {}; {driver}; {nvrtc}", devices.join(", "))
}
