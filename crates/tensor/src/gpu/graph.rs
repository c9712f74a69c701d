//! Graph capture and replay, emulated at the driver interface: between
//! [`GpuDevice::begin_capture`](super::GpuDevice::begin_capture) and
//! [`end_capture`](super::GpuDevice::end_capture) every launch, device copy
//! and memset is recorded (and still runs, so the captured step's results
//! are those of an eager step); [`GpuGraph::replay`] issues the recorded
//! calls again on the same pointers, with no allocation and no host work
//! between them. A copy from or to the host inside a capture is an error
//! (a graph cannot read host memory that changes between replays without
//! pinned staging buffers).
//!
//! Memory freed during the capture is not reused: the graph holds it (the
//! replayed kernels write there again) and gives it back to the caching
//! allocator when dropped. Inputs are changed between replays by writing
//! into the captured input tensors (`ops::copy_into`); outputs are the
//! tensors the captured code returned, overwritten by each replay.
//! On a real GPU the capture is also a CUDA graph (`cuStreamBeginCapture`
//! in relaxed mode, `cuStreamEndCapture`, `cuGraphInstantiate`; the work
//! captured does not run, so `end_capture` launches it once) and a replay
//! is one `cuGraphLaunch`. Either way a replay counts as one graph launch
//! (`DriverCounts::graph_launches`), not as the launches inside it.

use super::kernels::Kernel;
use super::{Dim3, KernelArg};

/// One recorded driver call.
#[derive(Clone, Debug)]
pub(crate) enum Recorded {
    Launch { kernel: &'static Kernel, grid: Dim3, block: Dim3, shared_bytes: u32, args: Vec<KernelArg> },
    Dtod { src: u64, dst: u64, bytes: usize },
    MemsetZero { dst: u64, bytes: usize },
}

/// A captured sequence of launches and device copies (see the module docs).
pub struct GpuGraph {
    pub(crate) device: super::GpuDevice,
    pub(crate) calls: Vec<Recorded>,
    pub(crate) memory: super::GraphMemory,
    /// Constant tables the recorded launches read (kept while the graph lives).
    pub(crate) tables: Vec<u64>,
    /// The driver's own instantiated graph (CUDA), launched by `replay`.
    pub(crate) native: Option<u64>,
}

impl GpuGraph {
    /// Whether the driver's own graph (CUDA) is replayed.
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    /// Kernel launches per replay.
    pub fn launches(&self) -> usize {
        self.calls.iter().filter(|c| matches!(c, Recorded::Launch { .. })).count()
    }

    /// Issues every recorded call again, in order.
    pub fn replay(&self) -> crate::Result<()> {
        self.device.replay(&self.calls, self.native)
    }
}

impl Drop for GpuGraph {
    fn drop(&mut self) {
        self.device.release_graph_memory(&self.memory, &self.tables, self.native);
    }
}
