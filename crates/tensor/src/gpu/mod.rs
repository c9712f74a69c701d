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
mod emu_streams;
pub mod graph;
pub mod kernel_cache;
pub mod kernels;
pub mod launch;
pub mod nvrtc_policy;
pub mod occupancy;
pub mod pinned;
pub mod pool;
pub mod sources;
mod tables;
pub mod upload;

pub use counters::{CountedDriver, DriverCounts};
pub use graph::GpuGraph;
pub use pinned::PinnedBuffer;
pub use pool::{AllocConfig, AllocMode, PoolStats, StreamId};
pub use upload::UploadSlots;

use crate::{DType, Result};
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
    /// The buffer of a bf16 tensor: passes only where the kernel's
    /// parameter is a `__nv_bfloat16*`, so a bf16 tensor never reaches an
    /// f32 kernel (nor an f32 tensor a bf16 parameter).
    PtrBf16(u64),
    I32(i32),
    U32(u32),
    U64(u64),
    F32(f32),
}

impl KernelArg {
    pub fn size(&self) -> usize {
        match self {
            KernelArg::Ptr(_) | KernelArg::PtrBf16(_) | KernelArg::U64(_) => 8,
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
    /// The device's compute capability (major, minor); None for the
    /// emulator, which has no tensor-core generation to choose by.
    fn compute_capability(&self) -> Option<(u32, u32)> {
        None
    }
    /// The alignment every pointer handed to kernels keeps (cuMemAlloc's 256).
    fn alignment(&self) -> usize {
        256
    }
    /// Whether the driver can guard gaps inside an allocation (the emulator).
    fn has_guard_gaps(&self) -> bool {
        false
    }
    /// Makes `bytes` from `ptr` (inside one allocation, between two views of
    /// a flat buffer) a guard gap: a kernel writing there is a launch error
    /// (the emulator's canary, checked after every launch and at the free).
    /// A no-op elsewhere.
    fn guard_gap(&self, _ptr: u64, _bytes: usize) -> Result<()> {
        Ok(())
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
    /// A real CUDA device: queues on its communication stream (a second
    /// stream, made at first use) a wait for an event recorded after the
    /// work queued so far on the compute stream, binds the context and
    /// returns that stream, where NCCL then runs beside later kernels. None
    /// on the emulator (everything has run already).
    fn comm_stream_after_compute(&self) -> Result<Option<usize>> {
        Ok(None)
    }
    /// Makes the compute stream wait (an event, no host wait) for the work
    /// queued so far on the communication stream; a no-op without one.
    fn compute_after_comm(&self) -> Result<()> {
        Ok(())
    }

    /// Page-locked host memory of `bytes` (cuMemHostAlloc), which copies to
    /// the device read asynchronously; its host address. The emulator
    /// hands out ordinary zeroed memory (page-aligned).
    fn host_alloc(&self, bytes: usize) -> Result<u64> {
        let layout = host_layout(bytes)?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(crate::TensorError::Cuda(format!("out of host memory allocating {bytes} pinned bytes")));
        }
        Ok(p as u64)
    }
    /// Frees memory from `host_alloc` (once no queued copy reads it).
    ///
    /// # Safety
    /// `ptr` came from this driver's `host_alloc(bytes)` and is freed once.
    unsafe fn host_free(&self, ptr: u64, bytes: usize) {
        if let Ok(layout) = host_layout(bytes) {
            // SAFETY: the caller's contract: allocated with this layout.
            unsafe { std::alloc::dealloc(ptr as *mut u8, layout) }
        }
    }
    /// Queues a copy of `bytes` from host memory at `src` (from `host_alloc`)
    /// to `dst`, returning at once; the emulator copies now.
    ///
    /// # Safety
    /// `src` holds `bytes` bytes and is not written until the copy has run
    /// (an event recorded after it has completed).
    unsafe fn htod_async(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        // SAFETY: the caller's contract.
        self.htod(unsafe { std::slice::from_raw_parts(src as *const u8, bytes) }, dst)
    }
    /// Queues a copy of `bytes` from host memory at `src` (from `host_alloc`)
    /// to `dst` on `stream`. On the copy stream it runs beside the compute
    /// stream's kernels, ordered with them only by events
    /// ([`GpuDriver::event_record_on`], [`GpuDriver::stream_wait_event`]).
    /// A driver with one stream queues it there.
    ///
    /// # Safety
    /// As [`GpuDriver::htod_async`]; and no queued work reads or writes
    /// `dst` unless ordered with this copy by an event.
    unsafe fn htod_async_on(&self, stream: Stream, src: u64, dst: u64, bytes: usize) -> Result<()> {
        let _ = stream;
        // SAFETY: the caller's contract.
        unsafe { self.htod_async(src, dst, bytes) }
    }
    /// Records an event after the work queued so far (cuEventRecord on the
    /// compute stream); an id for `event_wait`/`event_elapsed_ms`/`event_destroy`.
    /// The emulator runs kernels at once: its compute events are complete.
    fn event_record(&self) -> Result<u64> {
        Ok(0)
    }
    /// Records an event after the work queued so far on `stream`.
    fn event_record_on(&self, stream: Stream) -> Result<u64> {
        let _ = stream;
        self.event_record()
    }
    /// Makes `stream` wait, on the device, until `event`'s work has run
    /// (cuStreamWaitEvent); the host returns at once. A no-op where one
    /// stream orders everything.
    fn stream_wait_event(&self, stream: Stream, event: u64) -> Result<()> {
        let _ = (stream, event);
        Ok(())
    }
    /// Waits on the host until the event's work has run (cuEventSynchronize).
    fn event_wait(&self, _event: u64) -> Result<()> {
        Ok(())
    }
    /// Milliseconds between two completed events (cuEventElapsedTime); None
    /// where the driver has no device clock (the emulator).
    fn event_elapsed_ms(&self, _start: u64, _end: u64) -> Result<Option<f32>> {
        Ok(None)
    }
    fn event_destroy(&self, _event: u64) {}
    /// Starts capturing the stream's work into a driver graph
    /// (cuStreamBeginCapture, relaxed mode): queued work is then recorded,
    /// not run. False where the driver has no graphs of its own (the
    /// emulator: [`graph`] records and replays above the driver).
    fn begin_native_capture(&self) -> Result<bool> {
        Ok(false)
    }
    /// Ends a native capture: the instantiated graph (cuStreamEndCapture +
    /// cuGraphInstantiate), launched by `graph_launch`.
    fn end_native_capture(&self) -> Result<u64> {
        Err(crate::TensorError::Cuda("this driver has no graphs of its own".into()))
    }
    /// Queues one launch of an instantiated graph (cuGraphLaunch).
    fn graph_launch(&self, _exec: u64) -> Result<()> {
        Err(crate::TensorError::Cuda("this driver has no graphs of its own".into()))
    }
    fn graph_destroy(&self, _exec: u64) {}
}

/// The streams of a device: kernels, and the copies ordered with them, run
/// on `Compute`; `Copy` carries the uploads that overlap them (the next
/// batch), ordered with `Compute` by events only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Compute,
    Copy,
}

/// The layout of `host_alloc`'s ordinary memory: page-aligned, at least a byte.
fn host_layout(bytes: usize) -> Result<std::alloc::Layout> {
    std::alloc::Layout::from_size_align(bytes.max(1), 4096)
        .map_err(|_| crate::TensorError::Cuda(format!("{bytes} bytes of host memory cannot be allocated")))
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
    /// The multi-tensor launches' constant tables ([`tables`]).
    tables: std::sync::Mutex<tables::TableCache>,
    /// True while the driver captures a graph of its own.
    native_capture: std::sync::Mutex<bool>,
}

impl Drop for DeviceInner {
    fn drop(&mut self) {
        let tables = self.tables.get_mut().unwrap_or_else(|p| p.into_inner());
        tables.clear(&self.driver, &self.pool, STREAM);
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
                tables: std::sync::Mutex::new(tables::TableCache::default()),
                native_capture: std::sync::Mutex::new(false),
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

    /// The device's compute capability (None for the emulator).
    pub fn compute_capability(&self) -> Option<(u32, u32)> {
        self.inner.driver.compute_capability()
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

    /// Elements of guard gap after each view of a flat buffer: in the
    /// emulator's no-reuse mode (`DIFFUSE_GPU_ALLOC=direct`, where every
    /// buffer is its own allocation and its guard pages catch overruns and
    /// use-after-free) [`VIEW_ALIGN`], so an overrun from one view into its
    /// neighbour is caught too; 0 elsewhere (no memory spent on gaps).
    pub fn view_gap(&self) -> usize {
        match self.alloc_config().mode == AllocMode::Direct && self.inner.driver.has_guard_gaps() {
            true => VIEW_ALIGN,
            false => 0,
        }
    }

    /// Offsets and total length of views of `lens` elements in a flat
    /// buffer on this device ([`GpuStorage::views`] places them there).
    pub fn view_layout(&self, lens: &[usize]) -> (Vec<usize>, usize) {
        GpuStorage::view_offsets_with_gap(lens, self.view_gap())
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
        self.alloc(len, DType::F32)
    }

    /// A buffer of `len` bf16 elements; its contents are unspecified.
    pub fn alloc_bf16(&self, len: usize) -> Result<GpuStorage> {
        self.alloc(len, DType::BF16)
    }

    fn alloc(&self, len: usize, dtype: DType) -> Result<GpuStorage> {
        if dtype == DType::F64 {
            return Err(crate::TensorError::Unsupported {
                op: "alloc",
                device: self.name(),
                why: "GPU tensors are f32 or bf16, not f64".into(),
            });
        }
        // whole 4-byte words, so an odd bf16 length ends on a word too
        let bytes = (len.max(1) * dtype.size_in_bytes()).next_multiple_of(4);
        let block = self.inner.pool.alloc(&self.inner.driver, bytes, STREAM)?;
        let ptr = block.ptr;
        let graph = self.capture().clone();
        let buf = Arc::new(GpuBuffer { ptr, bytes, block: Some(block), graph, device: self.clone() });
        Ok(GpuStorage { buf, offset: 0, len, dtype, view: None })
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
        let native = match self.inner.driver.begin_native_capture() {
            Ok(n) => n,
            Err(e) => {
                self.inner.driver.end_capture();
                return Err(e);
            }
        };
        *self.native_capture() = native;
        *self.capture() = Some(Arc::new(std::sync::Mutex::new(Some(Vec::new()))));
        self.tables().begin_capture();
        Ok(())
    }

    fn native_capture(&self) -> std::sync::MutexGuard<'_, bool> {
        self.inner.native_capture.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, tables::TableCache> {
        self.inner.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device address of a constant table holding `values`, uploaded
    /// once and reused while a table with the same values is asked for
    /// ([`tables`]): the pointer and length tables of multi-tensor launches.
    /// Kernels only read it.
    pub fn constant_table(&self, values: &[u64]) -> Result<u64> {
        let native = *self.native_capture();
        self.tables().get(&self.inner.driver, &self.inner.pool, STREAM, values, native)
    }

    /// Whether a graph is being captured on this device.
    pub fn is_capturing(&self) -> bool {
        self.inner.driver.is_capturing()
    }

    /// Constant tables cached on the device.
    pub fn constant_tables(&self) -> usize {
        self.tables().len()
    }

    /// Ends the capture: the graph of what was recorded since `begin_capture`.
    pub fn end_capture(&self) -> Result<GpuGraph> {
        let (tables, deferred) = self.tables().end_capture();
        let calls = self
            .inner
            .driver
            .end_capture()
            .ok_or_else(|| crate::TensorError::Cuda("end_capture without begin_capture".into()))?;
        let memory = self.capture().take().unwrap_or_default();
        let native = match std::mem::take(&mut *self.native_capture()) {
            true => Some(self.inner.driver.end_native_capture()?),
            false => None,
        };
        let graph = GpuGraph { device: self.clone(), calls, memory, tables, native };
        for (ptr, values) in &deferred {
            // tables first asked for during a driver capture (see `tables`)
            self.inner.driver.htod(bytemuck::cast_slice(values), *ptr)?;
        }
        if graph.native.is_some() {
            // A driver graph recorded the work without running it; the
            // emulated capture ran it. Run it once so both end alike.
            graph.replay()?;
        }
        Ok(graph)
    }

    fn capture(&self) -> std::sync::MutexGuard<'_, Option<GraphMemory>> {
        self.inner.capture.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One launch of a graph: the driver's own, or the recorded calls issued
    /// again on the driver underneath (counted as one graph launch, not as
    /// the kernel launches and copies inside it, as a GPU's driver sees it).
    pub(crate) fn replay(&self, calls: &[graph::Recorded], native: Option<u64>) -> Result<()> {
        self.inner.driver.count_graph_launch();
        if let Some(exec) = native {
            return self.inner.driver.graph_launch(exec);
        }
        let d = self.inner.driver.inner();
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
    pub(crate) fn release_graph_memory(&self, memory: &GraphMemory, tables: &[u64], native: Option<u64>) {
        if let Some(exec) = native {
            self.inner.driver.graph_destroy(exec);
        }
        self.tables().unpin(tables);
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

/// The storage of a GPU tensor: `len` f32 (or bf16) elements in one buffer,
/// from element `offset` on. A view ([`GpuStorage::views`]) is one of several
/// tensors placed in one flat buffer (the parameters, gradients, moments
/// and EMA of a model): it is written in place while no clone of that view
/// exists, whatever the other views of the buffer do.
#[derive(Clone)]
pub struct GpuStorage {
    buf: Arc<GpuBuffer>,
    offset: usize,
    len: usize,
    /// F32, or BF16 (views are always f32).
    dtype: DType,
    /// Some for a view: its clones share this token (and not the buffer's
    /// count) to decide whether an in-place write must copy.
    view: Option<Arc<()>>,
}

/// Elements a view's offset is a multiple of (256 bytes: cuMemAlloc's
/// alignment, so that every view is as aligned as an allocation).
pub const VIEW_ALIGN: usize = 64;

impl GpuStorage {
    pub fn ptr(&self) -> u64 {
        self.buf.ptr + (self.dtype.size_in_bytes() * self.offset) as u64
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Element offsets of tensors of `lens` elements placed one after the
    /// other, each at a multiple of [`VIEW_ALIGN`]; and the total length
    /// (the packed layout, no guard gaps).
    pub fn view_offsets(lens: &[usize]) -> (Vec<usize>, usize) {
        Self::view_offsets_with_gap(lens, 0)
    }

    /// As [`GpuStorage::view_offsets`] with at least `gap` elements after
    /// every view (see [`GpuDevice::view_gap`]).
    pub fn view_offsets_with_gap(lens: &[usize], gap: usize) -> (Vec<usize>, usize) {
        let mut offsets = Vec::with_capacity(lens.len());
        let mut end = 0usize;
        for &n in lens {
            offsets.push(end);
            end = (end + n + gap).next_multiple_of(VIEW_ALIGN);
        }
        (offsets, end)
    }

    /// Views of `lens` elements each into this (non-view) storage, at
    /// [`GpuDevice::view_layout`], plus a view of the whole buffer; errors
    /// when they do not fit. The views alias the storage by design. Where
    /// the device guards views, the space after each is made a guard gap.
    pub fn views(&self, lens: &[usize]) -> crate::Result<(GpuStorage, Vec<GpuStorage>)> {
        self.views_with_gap(lens, self.device().view_gap())
    }

    /// Views packed with no guard gaps, for a buffer written as a whole (a
    /// staging buffer filled by one copy, which would overwrite the gaps).
    pub fn views_packed(&self, lens: &[usize]) -> crate::Result<(GpuStorage, Vec<GpuStorage>)> {
        self.views_with_gap(lens, 0)
    }

    fn views_with_gap(&self, lens: &[usize], gap: usize) -> crate::Result<(GpuStorage, Vec<GpuStorage>)> {
        let (offsets, total) = Self::view_offsets_with_gap(lens, gap);
        if self.view.is_some() || total > self.len || self.dtype != DType::F32 {
            return Err(crate::TensorError::invalid(
                "views",
                format!("{total} elements of views do not fit a buffer of {} elements", self.len),
            ));
        }
        if gap > 0 {
            // from each view's end to the next view (or the end of the views)
            let ends = offsets.iter().skip(1).copied().chain([total]);
            for ((&o, &n), next) in offsets.iter().zip(lens).zip(ends) {
                let from = self.ptr() + 4 * (o + n) as u64;
                self.device().driver().guard_gap(from, 4 * (next - o - n))?;
            }
        }
        let view = |offset, len| GpuStorage {
            buf: self.buf.clone(),
            offset,
            len,
            dtype: DType::F32,
            view: Some(Arc::new(())),
        };
        Ok((view(0, self.len), offsets.iter().zip(lens).map(|(&o, &n)| view(o, n)).collect()))
    }

    /// True for a view into a flat buffer.
    pub fn is_view(&self) -> bool {
        self.view.is_some()
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
    /// The kernel argument: a bf16 buffer passes only as a `__nv_bfloat16*`.
    pub fn arg(&self) -> KernelArg {
        match self.dtype {
            DType::BF16 => KernelArg::PtrBf16(self.ptr()),
            _ => KernelArg::Ptr(self.ptr()),
        }
    }

    /// The elements as f32 (a bf16 buffer widened, exactly).
    pub fn download_f32(&self) -> Result<Vec<f32>> {
        if self.dtype == DType::BF16 {
            return Ok(self.download_bf16()?.into_iter().map(half::bf16::to_f32).collect());
        }
        let mut out = vec![0f32; self.len];
        self.buf.device.driver().dtoh(self.ptr(), bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// The elements of a bf16 buffer as stored.
    pub fn download_bf16(&self) -> Result<Vec<half::bf16>> {
        if self.dtype != DType::BF16 {
            return Err(crate::TensorError::DTypeMismatch { op: "download_bf16", a: self.dtype, b: DType::BF16 });
        }
        let mut out = vec![half::bf16::ZERO; self.len];
        self.buf.device.driver().dtoh(self.ptr(), bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// A copy in a new buffer (tensors own their storage; writes never alias).
    pub fn deep_copy(&self) -> Result<GpuStorage> {
        let s = self.buf.device.alloc(self.len, self.dtype)?;
        self.buf.device.driver().dtod(self.ptr(), s.ptr(), self.len * self.dtype.size_in_bytes())?;
        Ok(s)
    }
}

impl fmt::Debug for GpuStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GpuStorage({} {:?} at {} on {}, {} bytes)",
            self.len,
            self.dtype,
            self.offset,
            self.buf.device.name(),
            self.buf.bytes
        )
    }
}

impl GpuStorage {
    /// Before an in-place write: copy the buffer if another tensor shares it
    /// (clones share GPU buffers; writes must not show through them).
    pub fn make_unique(&mut self) -> Result<()> {
        let shared = match &self.view {
            Some(token) => Arc::strong_count(token) > 1,
            None => Arc::strong_count(&self.buf) > 1,
        };
        if shared {
            *self = self.deep_copy()?;
        }
        Ok(())
    }
}
