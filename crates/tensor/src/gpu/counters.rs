//! Counted driver calls: every call a [`GpuDevice`](super::GpuDevice) makes
//! into its driver goes through [`CountedDriver`], so a test or
//! `diffuse bench step --counters` can say how many allocations, frees,
//! launches, copies, memsets and host synchronisations a step costs.

use super::graph::Recorded;
use super::{GpuDriver, Launch, Stream};
use crate::{Result, TensorError};
use std::ops::Sub;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

/// A snapshot of a device's driver calls since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverCounts {
    /// Device allocations (cuMemAlloc); a caching allocator hit is not one.
    pub allocs: u64,
    /// Device frees (cuMemFree, which synchronises the device).
    pub frees: u64,
    /// Kernel launches.
    pub launches: u64,
    /// Copies host to device.
    pub htod: u64,
    /// Copies device to host.
    pub dtoh: u64,
    /// Copies device to device.
    pub dtod: u64,
    /// Memsets.
    pub memsets: u64,
    /// Times the host waited for the device: every `synchronize` and every
    /// copy to the host (it waits for the stream's queued work).
    pub host_syncs: u64,
    /// Bytes copied host to device.
    pub htod_bytes: u64,
    /// Bytes copied device to host.
    pub dtoh_bytes: u64,
    /// Pinned host allocations (cuMemHostAlloc) and frees.
    pub pinned_allocs: u64,
    pub pinned_frees: u64,
    /// Host waits on an event (a pinned buffer waiting for its last copy
    /// before the host writes it again; not a device-wide synchronisation).
    pub event_waits: u64,
    /// Graph launches (one per replay; the launches inside are not counted).
    pub graph_launches: u64,
    /// Copies to the device queued on the copy stream (also counted in
    /// `htod`): the uploads that overlap the compute stream's kernels.
    pub copy_stream_copies: u64,
    /// Device-side waits of one stream on another's event (cuStreamWaitEvent).
    pub stream_waits: u64,
}

impl Sub for DriverCounts {
    type Output = DriverCounts;
    /// The calls made between two snapshots (`later - earlier`).
    fn sub(self, o: DriverCounts) -> DriverCounts {
        DriverCounts {
            allocs: self.allocs - o.allocs,
            frees: self.frees - o.frees,
            launches: self.launches - o.launches,
            htod: self.htod - o.htod,
            dtoh: self.dtoh - o.dtoh,
            dtod: self.dtod - o.dtod,
            memsets: self.memsets - o.memsets,
            host_syncs: self.host_syncs - o.host_syncs,
            htod_bytes: self.htod_bytes - o.htod_bytes,
            dtoh_bytes: self.dtoh_bytes - o.dtoh_bytes,
            pinned_allocs: self.pinned_allocs - o.pinned_allocs,
            pinned_frees: self.pinned_frees - o.pinned_frees,
            event_waits: self.event_waits - o.event_waits,
            graph_launches: self.graph_launches - o.graph_launches,
            copy_stream_copies: self.copy_stream_copies - o.copy_stream_copies,
            stream_waits: self.stream_waits - o.stream_waits,
        }
    }
}

impl DriverCounts {
    /// `(name, value)` pairs in a fixed order (for JSON and tables).
    pub fn fields(&self) -> [(&'static str, u64); 16] {
        [
            ("allocs", self.allocs),
            ("frees", self.frees),
            ("launches", self.launches),
            ("htod", self.htod),
            ("dtoh", self.dtoh),
            ("dtod", self.dtod),
            ("memsets", self.memsets),
            ("host_syncs", self.host_syncs),
            ("htod_bytes", self.htod_bytes),
            ("dtoh_bytes", self.dtoh_bytes),
            ("pinned_allocs", self.pinned_allocs),
            ("pinned_frees", self.pinned_frees),
            ("event_waits", self.event_waits),
            ("graph_launches", self.graph_launches),
            ("copy_stream_copies", self.copy_stream_copies),
            ("stream_waits", self.stream_waits),
        ]
    }
}

#[derive(Default)]
struct Counters {
    allocs: AtomicU64,
    frees: AtomicU64,
    launches: AtomicU64,
    htod: AtomicU64,
    dtoh: AtomicU64,
    dtod: AtomicU64,
    memsets: AtomicU64,
    host_syncs: AtomicU64,
    htod_bytes: AtomicU64,
    dtoh_bytes: AtomicU64,
    pinned_allocs: AtomicU64,
    pinned_frees: AtomicU64,
    event_waits: AtomicU64,
    graph_launches: AtomicU64,
    copy_stream_copies: AtomicU64,
    stream_waits: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

/// A driver whose calls are counted; it implements [`GpuDriver`] itself, so
/// every caller counts without knowing it.
pub struct CountedDriver {
    inner: Arc<dyn GpuDriver>,
    c: Counters,
    /// The calls recorded while a graph is being captured.
    capture: Mutex<Option<Vec<Recorded>>>,
}

impl CountedDriver {
    pub fn new(inner: Arc<dyn GpuDriver>) -> Self {
        CountedDriver { inner, c: Counters::default(), capture: Mutex::new(None) }
    }

    fn capturing(&self) -> std::sync::MutexGuard<'_, Option<Vec<Recorded>>> {
        self.capture.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts recording launches, device copies and memsets.
    pub(crate) fn begin_capture(&self) -> Result<()> {
        let mut c = self.capturing();
        if c.is_some() {
            return Err(TensorError::Cuda("a graph capture is already under way on this device".into()));
        }
        *c = Some(Vec::new());
        Ok(())
    }

    /// Stops recording; the calls recorded (None when no capture was under way).
    pub(crate) fn end_capture(&self) -> Option<Vec<Recorded>> {
        self.capturing().take()
    }

    /// A copy to the device that is not part of a captured graph (a
    /// constant table the graph reads, uploaded while it is captured; the
    /// emulator copies at once). Counted as any copy to the device.
    pub(crate) fn htod_outside_capture(&self, src: &[u8], dst: u64) -> Result<()> {
        bump(&self.c.htod, 1);
        bump(&self.c.htod_bytes, src.len() as u64);
        self.inner.htod(src, dst)
    }

    pub(crate) fn is_capturing(&self) -> bool {
        self.capturing().is_some()
    }

    fn record(&self, r: Recorded) {
        if let Some(calls) = self.capturing().as_mut() {
            calls.push(r);
        }
    }

    fn refuse_host_copy(&self, what: &str) -> Result<()> {
        if self.is_capturing() {
            return Err(TensorError::Cuda(format!("{what} inside a graph capture: a graph replays device work only")));
        }
        Ok(())
    }

    pub fn counts(&self) -> DriverCounts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.c;
        DriverCounts {
            allocs: l(&c.allocs),
            frees: l(&c.frees),
            launches: l(&c.launches),
            htod: l(&c.htod),
            dtoh: l(&c.dtoh),
            dtod: l(&c.dtod),
            memsets: l(&c.memsets),
            host_syncs: l(&c.host_syncs),
            htod_bytes: l(&c.htod_bytes),
            dtoh_bytes: l(&c.dtoh_bytes),
            pinned_allocs: l(&c.pinned_allocs),
            pinned_frees: l(&c.pinned_frees),
            event_waits: l(&c.event_waits),
            graph_launches: l(&c.graph_launches),
            copy_stream_copies: l(&c.copy_stream_copies),
            stream_waits: l(&c.stream_waits),
        }
    }

    pub(crate) fn count_graph_launch(&self) {
        bump(&self.c.graph_launches, 1);
    }

    /// The driver underneath (uncounted).
    pub fn inner(&self) -> &dyn GpuDriver {
        self.inner.as_ref()
    }
}

impl GpuDriver for CountedDriver {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn max_shared_bytes(&self) -> u32 {
        self.inner.max_shared_bytes()
    }
    fn compute_capability(&self) -> Option<(u32, u32)> {
        self.inner.compute_capability()
    }
    fn alloc(&self, bytes: usize) -> Result<u64> {
        bump(&self.c.allocs, 1);
        self.inner.alloc(bytes)
    }
    fn free(&self, ptr: u64) {
        bump(&self.c.frees, 1);
        self.inner.free(ptr)
    }
    fn htod(&self, src: &[u8], dst: u64) -> Result<()> {
        self.refuse_host_copy("a copy to the device")?;
        bump(&self.c.htod, 1);
        bump(&self.c.htod_bytes, src.len() as u64);
        self.inner.htod(src, dst)
    }
    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.refuse_host_copy("a copy to the host")?;
        bump(&self.c.dtoh, 1);
        bump(&self.c.dtoh_bytes, dst.len() as u64);
        bump(&self.c.host_syncs, 1);
        self.inner.dtoh(src, dst)
    }
    fn dtod(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        bump(&self.c.dtod, 1);
        self.record(Recorded::Dtod { src, dst, bytes });
        self.inner.dtod(src, dst, bytes)
    }
    fn memset_zero(&self, dst: u64, bytes: usize) -> Result<()> {
        bump(&self.c.memsets, 1);
        self.record(Recorded::MemsetZero { dst, bytes });
        self.inner.memset_zero(dst, bytes)
    }
    fn launch(&self, launch: &Launch<'_>) -> Result<()> {
        bump(&self.c.launches, 1);
        self.record(Recorded::Launch {
            kernel: launch.kernel,
            grid: launch.grid,
            block: launch.block,
            shared_bytes: launch.shared_bytes,
            args: launch.args.to_vec(),
        });
        self.inner.launch(launch)
    }
    fn synchronize(&self) -> Result<()> {
        self.refuse_host_copy("a synchronisation")?;
        bump(&self.c.host_syncs, 1);
        self.inner.synchronize()
    }
    fn alignment(&self) -> usize {
        self.inner.alignment()
    }
    fn poison(&self, ptr: u64, bytes: usize) {
        self.inner.poison(ptr, bytes)
    }
    fn has_guard_gaps(&self) -> bool {
        self.inner.has_guard_gaps()
    }
    fn guard_gap(&self, ptr: u64, bytes: usize) -> Result<()> {
        self.inner.guard_gap(ptr, bytes)
    }
    fn mem_info(&self) -> Option<(usize, usize)> {
        self.inner.mem_info()
    }
    fn bind_cuda_stream(&self) -> Result<Option<usize>> {
        self.inner.bind_cuda_stream()
    }
    fn comm_stream_after_compute(&self) -> Result<Option<usize>> {
        self.inner.comm_stream_after_compute()
    }
    fn compute_after_comm(&self) -> Result<()> {
        self.inner.compute_after_comm()
    }

    fn host_alloc(&self, bytes: usize) -> Result<u64> {
        bump(&self.c.pinned_allocs, 1);
        self.inner.host_alloc(bytes)
    }
    unsafe fn host_free(&self, ptr: u64, bytes: usize) {
        bump(&self.c.pinned_frees, 1);
        // SAFETY: forwarded contract.
        unsafe { self.inner.host_free(ptr, bytes) }
    }
    unsafe fn htod_async(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        self.refuse_host_copy("a copy to the device")?;
        bump(&self.c.htod, 1);
        bump(&self.c.htod_bytes, bytes as u64);
        // SAFETY: forwarded contract.
        unsafe { self.inner.htod_async(src, dst, bytes) }
    }
    unsafe fn htod_async_on(&self, stream: Stream, src: u64, dst: u64, bytes: usize) -> Result<()> {
        self.refuse_host_copy("a copy to the device")?;
        bump(&self.c.htod, 1);
        bump(&self.c.htod_bytes, bytes as u64);
        if stream == Stream::Copy {
            bump(&self.c.copy_stream_copies, 1);
        }
        // SAFETY: forwarded contract.
        unsafe { self.inner.htod_async_on(stream, src, dst, bytes) }
    }
    fn event_record(&self) -> Result<u64> {
        self.inner.event_record()
    }
    fn event_record_on(&self, stream: Stream) -> Result<u64> {
        self.inner.event_record_on(stream)
    }
    fn stream_wait_event(&self, stream: Stream, event: u64) -> Result<()> {
        // an emulated graph replays launches and copies only: a wait
        // recorded into it would be lost, so it belongs before the capture
        self.refuse_host_copy("a stream wait")?;
        bump(&self.c.stream_waits, 1);
        self.inner.stream_wait_event(stream, event)
    }
    fn event_wait(&self, event: u64) -> Result<()> {
        bump(&self.c.event_waits, 1);
        self.inner.event_wait(event)
    }
    fn event_elapsed_ms(&self, start: u64, end: u64) -> Result<Option<f32>> {
        self.inner.event_elapsed_ms(start, end)
    }
    fn event_destroy(&self, event: u64) {
        self.inner.event_destroy(event)
    }
    fn begin_native_capture(&self) -> Result<bool> {
        self.inner.begin_native_capture()
    }
    fn end_native_capture(&self) -> Result<u64> {
        self.inner.end_native_capture()
    }
    fn graph_launch(&self, exec: u64) -> Result<()> {
        self.inner.graph_launch(exec)
    }
    fn graph_destroy(&self, exec: u64) {
        self.inner.graph_destroy(exec)
    }
}
