//! `diffuse-emu`: a CUDA emulator that runs the project's kernels
//! (`kernels/*.cu`) on the CPU, so every GPU code path executes in CI.
//!
//! build.rs compiles each kernel file as host C++ with a shim header
//! (`shim/shim.h`), together with the fiber runtime (`src/runtime.cc`), into
//! one shared object that this crate loads with `dlopen`. Each CUDA thread is
//! a fiber; a block's fibers run on one OS thread and switch only at
//! barriers, warp collectives and `__nanosleep`; blocks spread over a pool of
//! worker threads. See README.md for what it guarantees and what it cannot.
//!
//! Bug finding is always on: device memory and shared memory start as NaN
//! (0xff bytes), every allocation sits against a guard page (an overrun is a
//! launch error naming the kernel, block and thread), barrier and
//! warp-collective misuse is a launch error naming the lanes, and the order
//! in which a block's threads run can be forwards, backwards or shuffled
//! (`DIFFUSE_EMU_ORDER=forward|reverse|shuffle:<seed>|warp-ahead|warp-ahead-reverse`,
//! or [`Emulator::set_thread_order`]). A hazard detector (kernels compiled
//! with `-fsanitize=thread`, hooks implemented by the runtime) makes
//! shared-memory races within a block and global-memory conflicts between
//! blocks launch errors ([`EmuError::Race`], [`Emulator::set_race_check`]).

use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// An error from the emulator. Launch errors carry the kernel's name, the
/// block and the threads involved in their message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmuError {
    #[error("CUDA emulator unavailable: {0}")]
    Load(String),
    #[error("no kernel named `{0}` is compiled into the CUDA emulator")]
    UnknownKernel(String),
    #[error("invalid launch configuration: {0}")]
    Config(String),
    #[error("bad kernel arguments: {0}")]
    Arguments(String),
    #[error("kernel fault: {0}")]
    Fault(String),
    #[error("barrier or warp-collective misuse: {0}")]
    Sync(String),
    #[error("kernel trap: {0}")]
    Trap(String),
    #[error("device memory: {0}")]
    Memory(String),
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    /// A shared-memory hazard between threads of a block, or a global-memory
    /// conflict between blocks of a grid (see [`Emulator::set_race_check`]).
    #[error("data race: {0}")]
    Race(String),
}

pub type Result<T> = std::result::Result<T, EmuError>;

/// The order in which the scheduler runs the threads of a block between two
/// synchronisation points. Code with a missing `__syncthreads` usually passes
/// in one order and fails in another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ThreadOrder {
    #[default]
    Forward,
    Reverse,
    /// A permutation per block drawn from this seed (and the block index).
    Shuffle(u64),
    /// Each warp runs as far as it can on its own (through its warp
    /// collectives, up to a `__syncthreads` or its end) before the next warp
    /// starts: warp 0 first.
    WarpAhead,
    /// [`WarpAhead`](Self::WarpAhead) from the last warp (and last lane) to the first.
    WarpAheadReverse,
}

impl ThreadOrder {
    /// `DIFFUSE_EMU_ORDER`, if set.
    pub fn from_env() -> Result<Option<ThreadOrder>> {
        match std::env::var("DIFFUSE_EMU_ORDER") {
            Ok(s) if !s.trim().is_empty() => s.parse().map(Some),
            _ => Ok(None),
        }
    }
}

impl FromStr for ThreadOrder {
    type Err = EmuError;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        match s {
            "forward" => Ok(ThreadOrder::Forward),
            "reverse" => Ok(ThreadOrder::Reverse),
            "shuffle" => Ok(ThreadOrder::Shuffle(0)),
            "warp-ahead" => Ok(ThreadOrder::WarpAhead),
            "warp-ahead-reverse" => Ok(ThreadOrder::WarpAheadReverse),
            _ => match s.strip_prefix("shuffle:").map(|n| n.trim().parse::<u64>()) {
                Some(Ok(seed)) => Ok(ThreadOrder::Shuffle(seed)),
                _ => Err(EmuError::Config(format!(
                    "thread order `{s}`: expected forward, reverse, shuffle:<seed>, warp-ahead or warp-ahead-reverse (DIFFUSE_EMU_ORDER)"
                ))),
            },
        }
    }
}

impl fmt::Display for ThreadOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThreadOrder::Forward => write!(f, "forward"),
            ThreadOrder::Reverse => write!(f, "reverse"),
            ThreadOrder::Shuffle(s) => write!(f, "shuffle:{s}"),
            ThreadOrder::WarpAhead => write!(f, "warp-ahead"),
            ThreadOrder::WarpAheadReverse => write!(f, "warp-ahead-reverse"),
        }
    }
}

/// Grid or block dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl Dim3 {
    pub const fn new(x: u32, y: u32, z: u32) -> Self {
        Dim3 { x, y, z }
    }
}
impl From<u32> for Dim3 {
    fn from(x: u32) -> Self {
        Dim3 { x, y: 1, z: 1 }
    }
}
impl From<(u32, u32)> for Dim3 {
    fn from((x, y): (u32, u32)) -> Self {
        Dim3 { x, y, z: 1 }
    }
}
impl From<(u32, u32, u32)> for Dim3 {
    fn from((x, y, z): (u32, u32, u32)) -> Self {
        Dim3 { x, y, z }
    }
}
impl From<[u32; 3]> for Dim3 {
    fn from([x, y, z]: [u32; 3]) -> Self {
        Dim3 { x, y, z }
    }
}

/// The kind of a kernel parameter, deduced from its C++ type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// A struct by value, `bool`, an 8/16-bit integer, ...
    Other,
    Ptr,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl ArgKind {
    fn from_raw(k: u32) -> ArgKind {
        match k {
            1 => ArgKind::Ptr,
            2 => ArgKind::I32,
            3 => ArgKind::U32,
            4 => ArgKind::I64,
            5 => ArgKind::U64,
            6 => ArgKind::F32,
            7 => ArgKind::F64,
            _ => ArgKind::Other,
        }
    }
}

/// A typed kernel argument, passed by value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// A device pointer (0 is a null pointer).
    Ptr(u64),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
}

impl Arg {
    pub fn kind(&self) -> ArgKind {
        match self {
            Arg::Ptr(_) => ArgKind::Ptr,
            Arg::I32(_) => ArgKind::I32,
            Arg::U32(_) => ArgKind::U32,
            Arg::I64(_) => ArgKind::I64,
            Arg::U64(_) => ArgKind::U64,
            Arg::F32(_) => ArgKind::F32,
            Arg::F64(_) => ArgKind::F64,
        }
    }
    pub fn size(&self) -> usize {
        match self {
            Arg::I32(_) | Arg::U32(_) | Arg::F32(_) => 4,
            _ => 8,
        }
    }
    fn as_ptr(&self) -> *const c_void {
        match self {
            Arg::Ptr(v) | Arg::U64(v) => v as *const u64 as *const c_void,
            Arg::I32(v) => v as *const i32 as *const c_void,
            Arg::U32(v) => v as *const u32 as *const c_void,
            Arg::I64(v) => v as *const i64 as *const c_void,
            Arg::F32(v) => v as *const f32 as *const c_void,
            Arg::F64(v) => v as *const f64 as *const c_void,
        }
    }
}

/// What the registry knows about one compiled kernel.
#[derive(Clone, Debug)]
pub struct KernelInfo {
    pub name: &'static str,
    /// The source file, relative to the workspace root.
    pub file: &'static str,
    /// The parameter list as written in the source.
    pub params: &'static str,
    pub arg_names: Vec<&'static str>,
    pub arg_sizes: Vec<usize>,
    pub arg_kinds: Vec<ArgKind>,
}

/// Element types that can be copied to and from device memory as raw bytes.
pub trait Plain: Copy + 'static + sealed::Sealed {}
mod sealed {
    pub trait Sealed {}
}
macro_rules! plain {
    ($($t:ty),*) => { $(impl sealed::Sealed for $t {} impl Plain for $t {})* };
}
plain!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

fn as_bytes<T: Plain>(v: &[T]) -> &[u8] {
    // SAFETY: Plain types are primitive numbers without padding.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}
fn as_bytes_mut<T: Plain>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as above; every bit pattern is a valid value of a Plain type.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

// ------------------------------------------------------------------ the shared object

mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    pub const API_VERSION: u32 = 6;

    #[repr(C)]
    pub struct KernelDesc {
        pub name: *const c_char,
        pub file: *const c_char,
        pub params: *const c_char,
        pub n_args: u32,
        pub arg_sizes: *const u32,
        pub arg_kinds: *const u32,
        pub arg_names: *const *const c_char,
        pub entry: *const c_void,
        pub flags: u32,
        pub _pad: u32,
    }

    #[repr(C)]
    pub struct Launch {
        pub kernel: u32,
        pub grid: [u32; 3],
        pub block: [u32; 3],
        pub shared_bytes: u32,
        pub order: u32,
        pub use_ucontext: u32,
        pub seed: u64,
        pub n_args: u32,
        pub checks: u32,
        pub args: *const *const c_void,
        pub arg_sizes: *const u32,
    }

    #[repr(C)]
    pub struct Api {
        pub version: u32,
        pub kernel_count: u32,
        pub kernels: *const KernelDesc,
        pub switch_kind: *const c_char,
        pub init: unsafe extern "C" fn(u32, *mut c_char, usize) -> c_int,
        pub n_workers: unsafe extern "C" fn() -> u32,
        pub alloc: unsafe extern "C" fn(usize, *mut u64, *mut c_char, usize) -> c_int,
        pub free: unsafe extern "C" fn(u64, *mut c_char, usize) -> c_int,
        pub htod: unsafe extern "C" fn(u64, *const c_void, usize, *mut c_char, usize) -> c_int,
        pub dtoh: unsafe extern "C" fn(*mut c_void, u64, usize, *mut c_char, usize) -> c_int,
        pub dtod: unsafe extern "C" fn(u64, u64, usize, *mut c_char, usize) -> c_int,
        pub memset: unsafe extern "C" fn(u64, c_int, usize, *mut c_char, usize) -> c_int,
        pub launch: unsafe extern "C" fn(*const Launch, *mut c_char, usize) -> c_int,
        pub alloc_info: unsafe extern "C" fn(u64, *mut u64, *mut u64) -> c_int,
        pub live_allocations: unsafe extern "C" fn() -> u64,
        pub guard_gap: unsafe extern "C" fn(u64, usize, *mut c_char, usize) -> c_int,
    }
}

const SO_PATH: &str = env!("DIFFUSE_EMU_SO");
static SO_BYTES: &[u8] = include_bytes!(env!("DIFFUSE_EMU_SO"));

struct Runtime {
    api: &'static ffi::Api,
    kernels: Vec<KernelInfo>,
    by_name: HashMap<&'static str, u32>,
    workers: usize,
    switch_kind: &'static str,
}

// SAFETY: the API table is immutable and its functions are thread-safe.
unsafe impl Send for Runtime {}
unsafe impl Sync for Runtime {}

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

fn cstr(p: *const c_char) -> &'static str {
    if p.is_null() {
        return "";
    }
    // SAFETY: the strings are static data of the (never unloaded) shared object.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("?")
}

fn dl_error() -> String {
    // SAFETY: dlerror returns a thread-local C string or null.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown dlopen error".into()
    } else {
        cstr(e).to_string()
    }
}

fn open_shared_object() -> std::result::Result<*mut c_void, String> {
    if std::path::Path::new(SO_PATH).exists() {
        let p = std::ffi::CString::new(SO_PATH).unwrap();
        // SAFETY: a valid C string; the library's constructors only fill tables.
        let h = unsafe { libc::dlopen(p.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if !h.is_null() {
            return Ok(h);
        }
    }
    // The build directory is gone (an installed binary): load the embedded copy.
    open_embedded()
}

fn open_embedded() -> std::result::Result<*mut c_void, String> {
    let path = std::env::temp_dir().join(format!(
        "diffuse-emu-{}-{}-{:x}.so",
        std::process::id(),
        SO_BYTES.len(),
        SO_BYTES.as_ptr() as usize
    ));
    std::fs::write(&path, SO_BYTES).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let p = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: as above.
    let h = unsafe { libc::dlopen(p.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    let _ = std::fs::remove_file(&path);
    if h.is_null() {
        return Err(format!("dlopen of the emulator runtime failed: {}", dl_error()));
    }
    Ok(h)
}

/// `DIFFUSE_EMU_RACECHECK`: on unless `0` or `off`.
fn race_check_from_env() -> Result<bool> {
    match std::env::var("DIFFUSE_EMU_RACECHECK") {
        Err(_) => Ok(true),
        Ok(v) => match v.trim() {
            "" | "1" | "on" => Ok(true),
            "0" | "off" => Ok(false),
            other => Err(EmuError::Config(format!("DIFFUSE_EMU_RACECHECK=`{other}`: expected on, off, 1 or 0"))),
        },
    }
}

fn default_workers() -> usize {
    if let Some(n) = std::env::var("DIFFUSE_EMU_THREADS").ok().and_then(|v| v.trim().parse::<usize>().ok()) {
        return n.clamp(1, 64);
    }
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8)
}

fn load_runtime() -> std::result::Result<Runtime, String> {
    let h = open_shared_object()?;
    let sym = std::ffi::CString::new("diffuse_emu_api").unwrap();
    // SAFETY: h is a live handle; the symbol has the declared signature.
    let f = unsafe { libc::dlsym(h, sym.as_ptr()) };
    if f.is_null() {
        return Err(format!("the emulator runtime has no diffuse_emu_api: {}", dl_error()));
    }
    // SAFETY: diffuse_emu_api: extern "C" fn() -> *const Api, a static table.
    let api: &'static ffi::Api = unsafe {
        let get: unsafe extern "C" fn() -> *const ffi::Api = std::mem::transmute(f);
        &*get()
    };
    if api.version != ffi::API_VERSION {
        return Err(format!("emulator runtime API version {} (expected {})", api.version, ffi::API_VERSION));
    }
    let mut err = [0 as c_char; 1024];
    // SAFETY: err is a writable buffer of the given length.
    let rc = unsafe { (api.init)(default_workers() as u32, err.as_mut_ptr(), err.len()) };
    if rc != 0 {
        return Err(cstr(err.as_ptr()).to_string());
    }
    let mut kernels = Vec::with_capacity(api.kernel_count as usize);
    let mut by_name = HashMap::new();
    for i in 0..api.kernel_count as usize {
        // SAFETY: kernels points at kernel_count descriptors of static data.
        let d = unsafe { &*api.kernels.add(i) };
        let n = d.n_args as usize;
        let (mut sizes, mut kinds, mut names) = (Vec::new(), Vec::new(), Vec::new());
        for a in 0..n {
            // SAFETY: each array holds n_args entries.
            unsafe {
                sizes.push(*d.arg_sizes.add(a) as usize);
                kinds.push(ArgKind::from_raw(*d.arg_kinds.add(a)));
                names.push(cstr(*d.arg_names.add(a)));
            }
        }
        let info = KernelInfo {
            name: cstr(d.name),
            file: cstr(d.file),
            params: cstr(d.params),
            arg_names: names,
            arg_sizes: sizes,
            arg_kinds: kinds,
        };
        by_name.insert(info.name, i as u32);
        kernels.push(info);
    }
    // SAFETY: a plain query.
    let workers = unsafe { (api.n_workers)() } as usize;
    Ok(Runtime { api, kernels, by_name, workers, switch_kind: cstr(api.switch_kind) })
}

fn runtime() -> Result<&'static Runtime> {
    match RUNTIME.get_or_init(load_runtime) {
        Ok(r) => Ok(r),
        Err(e) => Err(EmuError::Load(e.clone())),
    }
}

fn error(code: c_int, err: &[c_char]) -> EmuError {
    let msg = cstr(err.as_ptr()).to_string();
    match code {
        1 => EmuError::Config(msg),
        2 => EmuError::Arguments(msg),
        3 => EmuError::Fault(msg),
        4 => EmuError::Sync(msg),
        5 => EmuError::Trap(msg),
        6 => EmuError::Memory(msg),
        7 => EmuError::OutOfMemory(msg),
        8 => EmuError::UnknownKernel(msg),
        10 => EmuError::Race(msg),
        _ => EmuError::Load(msg),
    }
}

macro_rules! call {
    ($f:expr, $($a:expr),*) => {{
        let mut err = [0 as c_char; 2048];
        // SAFETY: the runtime validates every device range before touching it;
        // host pointers come from live Rust slices of the given lengths.
        let rc = unsafe { $f($($a,)* err.as_mut_ptr(), err.len()) };
        if rc == 0 { Ok(()) } else { Err(error(rc, &err)) }
    }};
}

// ------------------------------------------------------------------ shared-memory limit

/// The most dynamic shared memory a block may ask for: what the runtime
/// provides (EMU_MAX_SHARED_BYTES in shim/emu_abi.h, an H100's 227 KiB).
pub const MAX_SHARED_BYTES: u32 = 227 * 1024;

/// Parses a shared-memory limit: bytes (`65536`) or KiB (`64K`, `99KiB`),
/// at most [`MAX_SHARED_BYTES`].
pub fn parse_shared_limit(s: &str) -> Result<u32> {
    let t = s.trim();
    let bad = || {
        EmuError::Config(format!(
            "shared-memory limit `{s}`: expected bytes or KiB (65536, 64K, 99KiB), at most {MAX_SHARED_BYTES} (DIFFUSE_EMU_MAX_SMEM)"
        ))
    };
    let lower = t.to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix("kib").or_else(|| lower.strip_suffix('k')) {
        Some(d) => (d.trim().to_string(), 1024u64),
        None => (lower.clone(), 1),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(unit).ok_or_else(bad)?;
    if bytes == 0 || bytes > MAX_SHARED_BYTES as u64 {
        return Err(bad());
    }
    Ok(bytes as u32)
}

/// `DIFFUSE_EMU_MAX_SMEM`, if set: the opt-in shared memory per block of the
/// emulated device (`99K` for an RTX 30xx/40xx, `64K` for sm_75).
pub fn shared_limit_from_env() -> Result<Option<u32>> {
    match std::env::var("DIFFUSE_EMU_MAX_SMEM") {
        Ok(v) => parse_shared_limit(&v).map(Some),
        Err(_) => Ok(None),
    }
}

// ------------------------------------------------------------------ Emulator

/// A handle on the CUDA emulator. Handles are independent (each has its own
/// thread order and frees its own leftover allocations when dropped) but
/// share one process-wide runtime: device memory is one address space and
/// launches run one at a time on the shared worker pool.
pub struct Emulator {
    rt: &'static Runtime,
    order: Mutex<ThreadOrder>,
    ucontext: AtomicBool,
    race_check: AtomicBool,
    max_shared: AtomicU32,
    owned: Mutex<HashSet<u64>>,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Emulator({} kernels, order {})", self.rt.kernels.len(), self.thread_order())
    }
}

impl Emulator {
    /// Loads the runtime (once per process) and reads `DIFFUSE_EMU_ORDER`,
    /// `DIFFUSE_EMU_UCONTEXT=1`, `DIFFUSE_EMU_RACECHECK` (`0` or `off`
    /// turns the hazard detector off; it is on by default) and
    /// `DIFFUSE_EMU_MAX_SMEM` (the shared memory a block may ask for).
    pub fn new() -> Result<Emulator> {
        let rt = runtime()?;
        let order = ThreadOrder::from_env()?.unwrap_or_default();
        let uc = std::env::var("DIFFUSE_EMU_UCONTEXT").is_ok_and(|v| v == "1");
        let race = race_check_from_env()?;
        let max_shared = shared_limit_from_env()?.unwrap_or(MAX_SHARED_BYTES);
        Ok(Emulator {
            rt,
            order: Mutex::new(order),
            ucontext: AtomicBool::new(uc),
            race_check: AtomicBool::new(race),
            max_shared: AtomicU32::new(max_shared),
            owned: Mutex::new(HashSet::new()),
        })
    }

    /// Whether the emulator runtime loads on this machine (and why not).
    pub fn available() -> Result<()> {
        runtime().map(|_| ())
    }

    pub fn set_thread_order(&self, order: ThreadOrder) {
        *self.order.lock().unwrap() = order;
    }
    pub fn thread_order(&self) -> ThreadOrder {
        *self.order.lock().unwrap()
    }
    /// The hazard detector: shared-memory races between the threads of a
    /// block (in the same barrier interval, from different warps or from one
    /// warp without a `__syncwarp`) and global-memory conflicts between the
    /// blocks of a grid become launch errors ([`EmuError::Race`]). On by
    /// default; it needs the kernels built with instrumentation (the default;
    /// `DIFFUSE_EMU_INSTRUMENT=0` at build time leaves it out).
    pub fn set_race_check(&self, on: bool) {
        self.race_check.store(on, Ordering::Relaxed);
    }
    pub fn race_check(&self) -> bool {
        self.race_check.load(Ordering::Relaxed)
    }
    /// The dynamic shared memory a block may ask for (the emulated device's
    /// opt-in maximum); a launch asking for more is [`EmuError::Config`].
    /// Errors above [`MAX_SHARED_BYTES`] or at zero.
    pub fn set_max_shared_bytes(&self, bytes: u32) -> Result<()> {
        if bytes == 0 || bytes > MAX_SHARED_BYTES {
            return Err(EmuError::Config(format!(
                "shared-memory limit of {bytes} bytes: the emulator provides 1 to {MAX_SHARED_BYTES}"
            )));
        }
        self.max_shared.store(bytes, Ordering::Relaxed);
        Ok(())
    }
    pub fn max_shared_bytes(&self) -> u32 {
        self.max_shared.load(Ordering::Relaxed)
    }
    /// Switch fibers with ucontext instead of the hand-written x86-64 switch
    /// (the portable fallback; about 30x slower per switch).
    pub fn set_ucontext(&self, on: bool) {
        self.ucontext.store(on, Ordering::Relaxed);
    }
    /// "x86-64 fibers" or "ucontext fibers" (the compiled-in default).
    pub fn switch_kind(&self) -> &'static str {
        if self.ucontext.load(Ordering::Relaxed) {
            "ucontext fibers"
        } else {
            self.rt.switch_kind
        }
    }
    /// Worker threads that blocks are spread over.
    pub fn workers(&self) -> usize {
        self.rt.workers
    }

    pub fn kernel_names(&self) -> Vec<&'static str> {
        self.rt.kernels.iter().map(|k| k.name).collect()
    }
    pub fn kernels(&self) -> &'static [KernelInfo] {
        &self.rt.kernels
    }
    pub fn kernel(&self, name: &str) -> Option<&'static KernelInfo> {
        self.rt.by_name.get(name).map(|&i| &self.rt.kernels[i as usize])
    }

    /// A device allocation of `bytes` bytes, 16-byte aligned, filled with
    /// 0xff (NaN) and ending against a guard page.
    pub fn alloc(&self, bytes: usize) -> Result<u64> {
        let mut p = 0u64;
        call!(self.rt.api.alloc, bytes, &mut p)?;
        self.owned.lock().unwrap().insert(p);
        Ok(p)
    }
    /// Frees an allocation; reports an out-of-bounds write its canaries caught.
    pub fn free(&self, ptr: u64) -> Result<()> {
        self.owned.lock().unwrap().remove(&ptr);
        call!(self.rt.api.free, ptr)
    }
    pub fn htod(&self, src: &[u8], dst: u64) -> Result<()> {
        call!(self.rt.api.htod, dst, src.as_ptr() as *const c_void, src.len())
    }
    pub fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        call!(self.rt.api.dtoh, dst.as_mut_ptr() as *mut c_void, src, dst.len())
    }
    pub fn dtod(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        call!(self.rt.api.dtod, dst, src, bytes)
    }
    pub fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()> {
        call!(self.rt.api.memset, dst, byte as c_int, bytes)
    }
    /// The live allocation containing `addr`: (pointer, bytes).
    pub fn alloc_info(&self, addr: u64) -> Option<(u64, usize)> {
        let (mut b, mut n) = (0u64, 0u64);
        // SAFETY: a lookup writing two integers.
        let ok = unsafe { (self.rt.api.alloc_info)(addr, &mut b, &mut n) };
        (ok != 0).then_some((b, n as usize))
    }
    /// Makes `bytes` bytes from `ptr` (inside a live allocation) a guard
    /// gap: canary-filled, and a launch that writes into it (or a free
    /// finding it written) is an error naming the allocation and offset.
    pub fn guard_gap(&self, ptr: u64, bytes: usize) -> Result<()> {
        call!(self.rt.api.guard_gap, ptr, bytes)
    }
    /// Live device allocations in the whole process.
    pub fn live_allocations(&self) -> u64 {
        // SAFETY: a plain query.
        unsafe { (self.rt.api.live_allocations)() }
    }

    /// Allocates and uploads `data`.
    pub fn upload<T: Plain>(&self, data: &[T]) -> Result<u64> {
        let p = self.alloc(std::mem::size_of_val(data))?;
        self.htod(as_bytes(data), p)?;
        Ok(p)
    }
    /// Downloads `len` elements from `ptr`.
    pub fn download<T: Plain + Default>(&self, ptr: u64, len: usize) -> Result<Vec<T>> {
        let mut v = vec![T::default(); len];
        self.dtoh(ptr, as_bytes_mut(&mut v))?;
        Ok(v)
    }

    /// Launches `name` with `cuLaunchKernel`-style arguments: for each
    /// parameter, a pointer to its value and the value's size. Returns when
    /// the grid has finished.
    ///
    /// # Safety
    /// Every `(ptr, size)` must point to `size` readable bytes. The kernel
    /// runs native code: pointer arguments are checked to point into live
    /// device allocations and overruns of those are caught, but a kernel that
    /// computes wild addresses can still touch host memory.
    pub unsafe fn launch(
        &self,
        name: &str,
        grid: impl Into<Dim3>,
        block: impl Into<Dim3>,
        shared_bytes: u32,
        args: &[(*const c_void, usize)],
    ) -> Result<()> {
        let &idx = self.rt.by_name.get(name).ok_or_else(|| EmuError::UnknownKernel(name.to_string()))?;
        let (grid, block) = (grid.into(), block.into());
        let max_shared = self.max_shared_bytes();
        if shared_bytes > max_shared {
            return Err(EmuError::Config(format!(
                "{name}: invalid launch: {shared_bytes} bytes of dynamic shared memory requested; this emulated device allows {max_shared} bytes ({} KiB) per block (DIFFUSE_EMU_MAX_SMEM)",
                max_shared as f64 / 1024.0
            )));
        }
        let ptrs: Vec<*const c_void> = args.iter().map(|a| a.0).collect();
        let sizes: Vec<u32> = args.iter().map(|a| a.1 as u32).collect();
        let (order, seed) = match self.thread_order() {
            ThreadOrder::Forward => (0, 0),
            ThreadOrder::Reverse => (1, 0),
            ThreadOrder::Shuffle(s) => (2, s),
            ThreadOrder::WarpAhead => (3, 0),
            ThreadOrder::WarpAheadReverse => (4, 0),
        };
        let l = ffi::Launch {
            kernel: idx,
            grid: [grid.x, grid.y, grid.z],
            block: [block.x, block.y, block.z],
            shared_bytes,
            order,
            use_ucontext: self.ucontext.load(Ordering::Relaxed) as u32,
            seed,
            n_args: args.len() as u32,
            checks: if self.race_check() { 3 } else { 0 },
            args: ptrs.as_ptr(),
            arg_sizes: sizes.as_ptr(),
        };
        call!(self.rt.api.launch, &l)
    }

    /// [`launch`](Self::launch) with typed arguments, also checking each
    /// argument's kind against the parameter's C++ type (a float passed for
    /// an `int` has the right size but is a bug). `Arg::U64` and `Arg::I64`
    /// are accepted for any 64-bit integer parameter.
    ///
    /// # Safety
    /// As for [`launch`](Self::launch).
    pub unsafe fn launch_args(
        &self,
        name: &str,
        grid: impl Into<Dim3>,
        block: impl Into<Dim3>,
        shared_bytes: u32,
        args: &[Arg],
    ) -> Result<()> {
        let k = self.kernel(name).ok_or_else(|| EmuError::UnknownKernel(name.to_string()))?;
        if args.len() != k.arg_kinds.len() {
            return Err(EmuError::Arguments(format!(
                "{name}: {} arguments given, the kernel takes {} ({})",
                args.len(),
                k.arg_kinds.len(),
                k.params
            )));
        }
        for (i, (a, &want)) in args.iter().zip(&k.arg_kinds).enumerate() {
            let ok = match (a.kind(), want) {
                (got, want) if got == want => true,
                (ArgKind::U64 | ArgKind::I64, ArgKind::U64 | ArgKind::I64) => true,
                (_, ArgKind::Other) => a.size() == k.arg_sizes[i],
                _ => false,
            };
            if !ok {
                return Err(EmuError::Arguments(format!(
                    "{name}: argument {i} (`{}`) is {:?}, the parameter is {:?} ({})",
                    k.arg_names[i], a, want, k.params
                )));
            }
        }
        let raw: Vec<(*const c_void, usize)> = args.iter().map(|a| (a.as_ptr(), a.size())).collect();
        self.launch(name, grid, block, shared_bytes, &raw)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let owned: Vec<u64> = self.owned.lock().unwrap().drain().collect();
        for p in owned {
            let _ = call!(self.rt.api.free, p);
        }
    }
}

/// One line for `diffuse info` ("CUDA emulator, 83 kernels, ..." or "unavailable (why)").
pub fn probe() -> String {
    match runtime() {
        Ok(rt) => {
            let order = match ThreadOrder::from_env() {
                Ok(o) => o.unwrap_or_default().to_string(),
                Err(e) => e.to_string(),
            };
            format!(
                "CUDA emulator, {} kernels, {} worker threads, {}, thread order {}",
                rt.kernels.len(),
                rt.workers,
                rt.switch_kind,
                order
            )
        }
        Err(e) => format!("unavailable ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy embedded in the binary loads too (what an installed binary,
    /// whose build directory is gone, falls back to). Only its tables are
    /// read: its runtime is never started.
    #[test]
    fn embedded_copy_loads() {
        let h = open_embedded().unwrap();
        let sym = std::ffi::CString::new("diffuse_emu_api").unwrap();
        // SAFETY: as in load_runtime.
        let api: &ffi::Api = unsafe {
            let f = libc::dlsym(h, sym.as_ptr());
            assert!(!f.is_null());
            let get: unsafe extern "C" fn() -> *const ffi::Api = std::mem::transmute(f);
            &*get()
        };
        assert_eq!(api.version, ffi::API_VERSION);
        assert!(api.kernel_count > 0);
    }

    #[test]
    fn shared_limits_parse_in_bytes_and_kib() {
        assert_eq!(parse_shared_limit("65536"), Ok(65536));
        assert_eq!(parse_shared_limit("64K"), Ok(65536));
        assert_eq!(parse_shared_limit(" 99KiB "), Ok(99 * 1024));
        assert_eq!(parse_shared_limit("227k"), Ok(MAX_SHARED_BYTES));
        for bad in ["", "0", "228K", "-1", "64M", "1e5", "99999999999999999999K"] {
            let e = parse_shared_limit(bad).unwrap_err().to_string();
            assert!(e.contains("DIFFUSE_EMU_MAX_SMEM"), "{bad}: {e}");
        }
    }
}
