//! The GPU half of the tensor crate. One interface, [`GpuDriver`], holds the
//! few things that differ between a real CUDA device (cudarc) and the CUDA
//! emulator: buffers, copies and kernel launches through typed handles
//! (`kernels`). Everything else —
//! grid sizes, argument packing, workspaces — lives once in `ops`, so the
//! emulator runs exactly the launch code a real GPU runs.

pub mod cuda;
pub mod debug;
pub mod emu;
pub mod kernel_cache;
pub mod kernels;
pub mod launch;
pub mod nvrtc_policy;
pub mod occupancy;
pub mod sources;

use crate::Result;
use std::fmt;
use std::sync::Arc;

/// Grid or block dimensions, as CUDA's dim3.
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
    pub const fn x(x: u32) -> Self {
        Dim3 { x, y: 1, z: 1 }
    }
}

/// One kernel argument, passed by value as `cuLaunchKernel` expects.
/// Device pointers are plain u64 on both drivers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    Ptr(u64),
    I32(i32),
    U32(u32),
    U64(u64),
    F32(f32),
}

impl KernelArg {
    pub fn size(&self) -> usize {
        match self {
            KernelArg::Ptr(_) | KernelArg::U64(_) => 8,
            KernelArg::I32(_) | KernelArg::U32(_) | KernelArg::F32(_) => 4,
        }
    }
}

/// A kernel launch: which kernel, its shape and its arguments.
#[derive(Clone, Debug)]
pub struct Launch<'a> {
    pub kernel: &'static kernels::Kernel,
    pub grid: Dim3,
    pub block: Dim3,
    pub shared_bytes: u32,
    pub args: &'a [KernelArg],
}

/// What a real CUDA device and the emulator each implement.
pub trait GpuDriver: Send + Sync {
    /// "cuda:0 (NVIDIA H100 ...)" or "emu".
    fn name(&self) -> String;
    fn alloc(&self, bytes: usize) -> Result<u64>;
    /// Frees a pointer returned by `alloc`. Called from Drop, so it cannot
    /// fail: a driver error is kept ([`debug::DeferredErrors`]) and returned
    /// by the driver's next fallible call.
    fn free(&self, ptr: u64);
    fn htod(&self, src: &[u8], dst: u64) -> Result<()>;
    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    fn dtod(&self, src: u64, dst: u64, bytes: usize) -> Result<()>;
    fn memset_zero(&self, dst: u64, bytes: usize) -> Result<()>;
    fn launch(&self, launch: &Launch<'_>) -> Result<()>;
    fn synchronize(&self) -> Result<()>;
    /// The dynamic shared memory one block may be given (the device's opt-in
    /// maximum: 227 KiB on an H100, 163 KiB on an A100, 99 KiB on sm_86/89/120,
    /// 64 KiB on sm_75). Launch code picks tiles within it.
    fn max_shared_bytes(&self) -> u32;
}

/// A handle on one GPU (real or emulated); cheap to clone.
#[derive(Clone)]
pub struct GpuDevice {
    driver: Arc<dyn GpuDriver>,
    /// Synchronise after every launch and name the launch in its error
    /// (`DIFFUSE_CUDA_SYNC=1`; see [`debug`]).
    sync_launches: bool,
}

impl GpuDevice {
    /// A device over `driver`; `DIFFUSE_CUDA_SYNC=1` turns on synchronous
    /// launches ([`GpuDevice::with_sync_launches`]).
    pub fn new(driver: Arc<dyn GpuDriver>) -> Self {
        GpuDevice { driver, sync_launches: debug::sync_launches_from_env() }
    }

    /// The same device with launches synchronous (or not): each launch waits
    /// for its kernel and an error names the kernel, its shape and arguments.
    pub fn with_sync_launches(mut self, on: bool) -> Self {
        self.sync_launches = on;
        self
    }

    pub fn sync_launches(&self) -> bool {
        self.sync_launches
    }

    /// The dynamic shared memory one block may be given on this device.
    pub fn max_shared_bytes(&self) -> u32 {
        self.driver.max_shared_bytes()
    }

    pub fn name(&self) -> String {
        self.driver.name()
    }

    pub fn driver(&self) -> &dyn GpuDriver {
        self.driver.as_ref()
    }

    pub fn same(&self, other: &GpuDevice) -> bool {
        Arc::ptr_eq(&self.driver, &other.driver)
    }

    /// A buffer of `len` f32 elements; its contents are unspecified.
    pub fn alloc_f32(&self, len: usize) -> Result<GpuStorage> {
        let bytes = len.max(1) * 4;
        let ptr = self.driver.alloc(bytes)?;
        Ok(GpuStorage { buf: Arc::new(GpuBuffer { ptr, bytes, device: self.clone() }), len })
    }

    pub fn zeros_f32(&self, len: usize) -> Result<GpuStorage> {
        let s = self.alloc_f32(len)?;
        self.driver.memset_zero(s.ptr(), len * 4)?;
        Ok(s)
    }

    pub fn upload_f32(&self, data: &[f32]) -> Result<GpuStorage> {
        let s = self.alloc_f32(data.len())?;
        self.driver.htod(bytemuck::cast_slice(data), s.ptr())?;
        Ok(s)
    }

    /// Checks the arguments against the kernel's parameters, then launches.
    /// With synchronous launches on, also waits for the kernel and names the
    /// launch in any error.
    pub fn launch(&self, launch: &Launch<'_>) -> Result<()> {
        launch.kernel.check_args(launch.args)?;
        if !self.sync_launches {
            return self.driver.launch(launch);
        }
        self.driver.launch(launch).and_then(|()| self.driver.synchronize()).map_err(|e| debug::name_launch(e, launch))
    }
}

/// Device memory, freed on drop.
pub struct GpuBuffer {
    ptr: u64,
    bytes: usize,
    device: GpuDevice,
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        self.device.driver.free(self.ptr);
    }
}

/// The storage of a GPU tensor: `len` f32 elements in one buffer.
#[derive(Clone)]
pub struct GpuStorage {
    buf: Arc<GpuBuffer>,
    len: usize,
}

impl GpuStorage {
    pub fn ptr(&self) -> u64 {
        self.buf.ptr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn device(&self) -> &GpuDevice {
        &self.buf.device
    }
    pub fn arg(&self) -> KernelArg {
        KernelArg::Ptr(self.buf.ptr)
    }

    pub fn download_f32(&self) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.len];
        self.buf.device.driver.dtoh(self.buf.ptr, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// A copy in a new buffer (tensors own their storage; writes never alias).
    pub fn deep_copy(&self) -> Result<GpuStorage> {
        let s = self.buf.device.alloc_f32(self.len)?;
        self.buf.device.driver.dtod(self.ptr(), s.ptr(), self.len * 4)?;
        Ok(s)
    }
}

impl fmt::Debug for GpuStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuStorage({} f32 on {}, {} bytes)", self.len, self.buf.device.name(), self.buf.bytes)
    }
}

impl GpuStorage {
    /// Before an in-place write: copy the buffer if another tensor shares it
    /// (clones share GPU buffers; writes must not show through them).
    pub fn make_unique(&mut self) -> Result<()> {
        if Arc::strong_count(&self.buf) > 1 {
            *self = self.deep_copy()?;
        }
        Ok(())
    }
}
