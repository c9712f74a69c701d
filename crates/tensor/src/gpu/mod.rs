//! The GPU half of the tensor crate. One interface, [`GpuDriver`], holds the
//! few things that differ between a real CUDA device (cudarc) and the CUDA
//! emulator: buffers, copies and kernel launches through typed handles
//! (`kernels`). Everything else —
//! grid sizes, argument packing, workspaces — lives once in `ops`, so the
//! emulator runs exactly the launch code a real GPU runs.

pub mod counters;
pub mod cuda;
pub mod debug;
pub mod emu;
pub mod graph;
pub mod kernel_cache;
pub mod kernels;
pub mod launch;
pub mod nvrtc_policy;
pub mod occupancy;
pub mod pool;
pub mod sources;

pub use counters::{CountedDriver, DriverCounts};
pub use graph::GpuGraph;
pub use pool::{AllocConfig, AllocMode, PoolStats, StreamId};

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
    /// The alignment every pointer handed to kernels keeps (cuMemAlloc's 256).
    fn alignment(&self) -> usize {
        256
    }
    /// Marks reused memory as unwritten (the emulator fills it with NaN, as
    /// fresh memory); a no-op on a real GPU. Not a counted driver call.
    fn poison(&self, _ptr: u64, _bytes: usize) {}
    /// (free, total) bytes of device memory, when the driver knows.
    fn mem_info(&self) -> Option<(usize, usize)> {
        None
    }
    /// A real CUDA device: binds its context to the calling thread and
    /// returns its stream (a `CUstream`) for libraries that queue work on it
    /// (NCCL, `crate::comm`). None on the emulator.
    fn bind_cuda_stream(&self) -> Result<Option<usize>> {
        Ok(None)
    }
}

/// A handle on one GPU (real or emulated); cheap to clone. Every driver
/// call is counted ([`GpuDevice::counts`]) and device memory comes from the
/// device's caching allocator ([`pool`]).
#[derive(Clone)]
pub struct GpuDevice {
    inner: Arc<DeviceInner>,
    /// Synchronise after every launch and name the launch in its error
    /// (`DIFFUSE_CUDA_SYNC=1`; see [`debug`]).
    sync_launches: bool,
}

struct DeviceInner {
    driver: CountedDriver,
    pool: pool::CachingAllocator,
    /// While a graph is captured: its memory (see [`GraphMemory`]).
    capture: std::sync::Mutex<Option<GraphMemory>>,
}

impl Drop for DeviceInner {
    fn drop(&mut self) {
        self.pool.empty_cache(&self.driver);
    }
}

/// The one stream of a device: kernels and copies are ordered on it.
const STREAM: StreamId = StreamId(0);

impl GpuDevice {
    /// A device allocating as `DIFFUSE_GPU_ALLOC` / `DIFFUSE_GPU_MEMORY_LIMIT`
    /// say (caching, no limit by default); `DIFFUSE_CUDA_SYNC=1` turns on
    /// synchronous launches ([`GpuDevice::with_sync_launches`]).
    pub fn new(driver: Arc<dyn GpuDriver>) -> Result<Self> {
        Ok(Self::with_alloc(driver, AllocConfig::from_env()?))
    }

    pub fn with_alloc(driver: Arc<dyn GpuDriver>, alloc: AllocConfig) -> Self {
        GpuDevice {
            inner: Arc::new(DeviceInner {
                driver: CountedDriver::new(driver),
                pool: pool::CachingAllocator::new(alloc),
                capture: std::sync::Mutex::new(None),
            }),
            sync_launches: debug::sync_launches_from_env(),
        }
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
        self.inner.driver.max_shared_bytes()
    }

    pub fn name(&self) -> String {
        self.inner.driver.name()
    }

    /// The (counted) driver.
    pub fn driver(&self) -> &dyn GpuDriver {
        &self.inner.driver
    }

    pub fn same(&self, other: &GpuDevice) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The driver calls made on this device so far.
    pub fn counts(&self) -> DriverCounts {
        self.inner.driver.counts()
    }

    /// What the caching allocator holds and did.
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    pub fn alloc_config(&self) -> AllocConfig {
        self.inner.pool.config()
    }

    /// Waits for every queued kernel and copy; cached memory then becomes
    /// free for any stream.
    pub fn synchronize(&self) -> Result<()> {
        self.inner.driver.synchronize()?;
        self.inner.pool.synchronized();
        Ok(())
    }

    /// Gives the allocator's cached blocks back to the driver.
    pub fn empty_cache(&self) {
        self.inner.pool.empty_cache(&self.inner.driver);
    }

    /// A buffer of `len` f32 elements; its contents are unspecified.
    pub fn alloc_f32(&self, len: usize) -> Result<GpuStorage> {
        let bytes = len.max(1) * 4;
        let block = self.inner.pool.alloc(&self.inner.driver, bytes, STREAM)?;
        let ptr = block.ptr;
        let graph = self.capture().clone();
        Ok(GpuStorage { buf: Arc::new(GpuBuffer { ptr, bytes, block: Some(block), graph, device: self.clone() }), len })
    }

    pub fn zeros_f32(&self, len: usize) -> Result<GpuStorage> {
        let s = self.alloc_f32(len)?;
        self.driver().memset_zero(s.ptr(), len * 4)?;
        Ok(s)
    }

    pub fn upload_f32(&self, data: &[f32]) -> Result<GpuStorage> {
        let s = self.alloc_f32(data.len())?;
        self.driver().htod(bytemuck::cast_slice(data), s.ptr())?;
        Ok(s)
    }

    /// Starts capturing a graph ([`graph`]): launches, device copies and
    /// memsets are recorded (and run); memory freed is held for the graph.
    pub fn begin_capture(&self) -> Result<()> {
        self.inner.driver.begin_capture()?;
        *self.capture() = Some(Arc::new(std::sync::Mutex::new(Some(Vec::new()))));
        Ok(())
    }

    /// Ends the capture: the graph of what was recorded since `begin_capture`.
    pub fn end_capture(&self) -> Result<GpuGraph> {
        let calls = self
            .inner
            .driver
            .end_capture()
            .ok_or_else(|| crate::TensorError::Cuda("end_capture without begin_capture".into()))?;
        let memory = self.capture().take().unwrap_or_default();
        Ok(GpuGraph { device: self.clone(), calls, memory })
    }

    fn capture(&self) -> std::sync::MutexGuard<'_, Option<GraphMemory>> {
        self.inner.capture.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn replay(&self, calls: &[graph::Recorded]) -> Result<()> {
        let d = &self.inner.driver;
        for c in calls {
            match c {
                graph::Recorded::Launch { kernel, grid, block, shared_bytes, args } => {
                    d.launch(&Launch { kernel, grid: *grid, block: *block, shared_bytes: *shared_bytes, args })?
                }
                graph::Recorded::Dtod { src, dst, bytes } => d.dtod(*src, *dst, *bytes)?,
                graph::Recorded::MemsetZero { dst, bytes } => d.memset_zero(*dst, *bytes)?,
            }
        }
        Ok(())
    }

    /// Gives a dropped graph's memory back to the allocator; buffers of the
    /// capture still alive go back when they are dropped.
    pub(crate) fn release_graph_memory(&self, memory: &GraphMemory) {
        let blocks = memory.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
        for b in blocks {
            self.inner.pool.free(&self.inner.driver, b, STREAM);
        }
    }

    /// Checks the arguments against the kernel's parameters, then launches.
    /// With synchronous launches on, also waits for the kernel and names the
    /// launch in any error.
    pub fn launch(&self, launch: &Launch<'_>) -> Result<()> {
        launch.kernel.check_args(launch.args)?;
        if !self.sync_launches {
            return self.inner.driver.launch(launch);
        }
        self.inner.driver.launch(launch).and_then(|()| self.synchronize()).map_err(|e| debug::name_launch(e, launch))
    }
}

/// Device memory, returned to its device's allocator on drop (after the
/// work queued so far: see the stream-order invariant in [`pool`]).
pub struct GpuBuffer {
    ptr: u64,
    bytes: usize,
    block: Option<pool::Block>,
    /// Set when allocated during a graph capture: the graph's replays write
    /// here, so while the graph lives the block stays with it.
    graph: Option<GraphMemory>,
    device: GpuDevice,
}

/// The memory a graph keeps while it lives (None once it is dropped).
pub(crate) type GraphMemory = Arc<std::sync::Mutex<Option<Vec<pool::Block>>>>;

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            let inner = &self.device.inner;
            // A buffer of a live graph, or any buffer freed during a capture
            // (recorded kernels may read it), stays with the graph.
            let graph = self.graph.take().or_else(|| self.device.capture().clone());
            let b = match graph {
                Some(g) => match g.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                    Some(blocks) => {
                        blocks.push(b);
                        return;
                    }
                    None => b,
                },
                None => b,
            };
            inner.pool.free(&inner.driver, b, STREAM);
        }
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
        self.buf.device.driver().dtoh(self.buf.ptr, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// A copy in a new buffer (tensors own their storage; writes never alias).
    pub fn deep_copy(&self) -> Result<GpuStorage> {
        let s = self.buf.device.alloc_f32(self.len)?;
        self.buf.device.driver().dtod(self.ptr(), s.ptr(), self.len * 4)?;
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
