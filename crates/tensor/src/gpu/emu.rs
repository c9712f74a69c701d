//! The emulated [`GpuDriver`]: `kernels/*.cu` compiled as host C++ and run
//! on the CPU by `diffuse-emu` (fibers for CUDA threads, blocks over a pool
//! of worker threads). The launch code in `gpu::launch` is the same as for a
//! real GPU, so the emulator tests it.
//!
//! What it adds for finding bugs (see crates/emu/README.md): fresh device
//! memory is NaN, overruns of a buffer are launch errors naming the kernel,
//! block and thread, barrier and warp-collective misuse is a launch error
//! naming the lanes, arguments are checked against the kernel's C++
//! signature (count, size and kind), and the order of a block's threads can
//! be forwards, backwards or shuffled (`DIFFUSE_EMU_ORDER`, or
//! [`emu_device_with_order`]).
//!
//! Launches are synchronous: a launch returns when the grid has finished,
//! with its error if it had one. The copy stream is not: its copies wait
//! and run as late as events allow, and a missing event wait between it
//! and the kernels is an error ([`super::emu_streams`]).

use super::debug::DeferredErrors;
use super::emu_streams::Streams;
use super::{GpuDevice, GpuDriver, KernelArg, Launch, Stream};
use crate::{Device, Result, TensorError};
use std::sync::{Arc, Mutex, MutexGuard};

pub use diffuse_emu::{EmuError, Emulator, ThreadOrder};

/// The CUDA emulator behind the [`GpuDriver`] interface.
pub struct EmuDriver {
    emu: Emulator,
    /// Errors of frees (from Drop), returned by the next fallible call.
    deferred: DeferredErrors,
    /// The copy stream's queue and the events between the streams.
    streams: Mutex<Streams>,
}

fn mem_err(e: EmuError) -> TensorError {
    TensorError::Cuda(format!("emulator: {e}"))
}

impl EmuDriver {
    /// A driver with the thread order from `DIFFUSE_EMU_ORDER` (default
    /// forward).
    pub fn new() -> Result<EmuDriver> {
        let emu = Emulator::new().map_err(|e| TensorError::Cuda(e.to_string()))?;
        Ok(EmuDriver { emu, deferred: DeferredErrors::default(), streams: Mutex::default() })
    }

    /// A driver whose blocks may have at most `bytes` of dynamic shared
    /// memory (a consumer GPU: 99 KiB on sm_86/89/120, 64 KiB on sm_75);
    /// launch code picks its tiles within it, and a launch above it is an
    /// error naming the kernel.
    pub fn with_max_shared_bytes(bytes: u32) -> Result<EmuDriver> {
        let d = EmuDriver::new()?;
        d.emu.set_max_shared_bytes(bytes).map_err(mem_err)?;
        Ok(d)
    }

    /// A driver that runs every block's threads in `order`.
    pub fn with_order(order: ThreadOrder) -> Result<EmuDriver> {
        let d = EmuDriver::new()?;
        d.emu.set_thread_order(order);
        Ok(d)
    }

    /// The emulator itself (thread order, kernel registry, allocations).
    pub fn emulator(&self) -> &Emulator {
        &self.emu
    }

    fn streams(&self) -> MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies queued on the copy stream that have not run yet.
    pub fn queued_copies(&self) -> usize {
        self.streams().queued()
    }

    /// A compute-stream operation on `[dst, dst + bytes)` (checked against
    /// the copy stream's queue).
    fn compute_range(&self, what: &'static str, dst: u64, bytes: usize) -> Result<()> {
        self.streams().compute_op(&[(dst, dst + bytes as u64)], what)
    }

    /// Runs copies the copy stream's queue released, in order.
    fn run_copies(&self, copies: Vec<(u64, u64, usize)>) -> Result<()> {
        for (src, dst, bytes) in copies {
            // SAFETY: htod_async_on's contract: the pinned source holds
            // `bytes` and stays allocated until an event after the copy has
            // been waited on, which is what runs it here.
            let src = unsafe { std::slice::from_raw_parts(src as *const u8, bytes) };
            self.emu.htod(src, dst).map_err(mem_err)?;
        }
        Ok(())
    }
}

impl GpuDriver for EmuDriver {
    fn name(&self) -> String {
        "emu".into()
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        self.deferred.take()?;
        self.emu.alloc(bytes).map_err(mem_err)
    }

    fn free(&self, ptr: u64) {
        // cuMemFree synchronises the device: queued copies run first
        let copies = self.streams().synchronize();
        if let Err(e) = self.run_copies(copies) {
            self.deferred.record(format!("emulator free({ptr:#x}): a queued copy: {e}"));
        }
        if let Err(e) = self.emu.free(ptr) {
            // Free runs from Drop and cannot fail, but an overrun its canary
            // check found must not go unnoticed.
            self.deferred.record(format!("emulator free({ptr:#x}): {e}"));
        }
    }

    fn htod(&self, src: &[u8], dst: u64) -> Result<()> {
        self.deferred.take()?;
        self.compute_range("a copy to the device", dst, src.len())?;
        self.emu.htod(src, dst).map_err(mem_err)
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.deferred.take()?;
        self.compute_range("a copy to the host", src, dst.len())?;
        // the host waits for the compute stream: copies queued later follow it
        let mut st = self.streams();
        let ev = st.record_compute();
        let copies = st.host_wait(ev);
        st.destroy(ev);
        drop(st);
        self.run_copies(copies?)?;
        self.emu.dtoh(src, dst).map_err(mem_err)
    }

    fn dtod(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        self.deferred.take()?;
        let what = "a device-to-device copy";
        self.streams().compute_op(&[(src, src + bytes as u64), (dst, dst + bytes as u64)], what)?;
        self.emu.dtod(src, dst, bytes).map_err(mem_err)
    }

    fn memset_zero(&self, dst: u64, bytes: usize) -> Result<()> {
        self.deferred.take()?;
        self.compute_range("a memset", dst, bytes)?;
        self.emu.memset(dst, 0, bytes).map_err(mem_err)
    }

    fn launch(&self, l: &Launch<'_>) -> Result<()> {
        self.deferred.take()?;
        {
            let mut st = self.streams();
            // a kernel may touch its pointers' allocations from the pointer on
            let ranges: Vec<(u64, u64)> = match st.tracking() {
                false => Vec::new(),
                true => l
                    .args
                    .iter()
                    .filter_map(|a| match *a {
                        KernelArg::Ptr(p) | KernelArg::PtrBf16(p) if p != 0 => {
                            Some((p, self.emu.alloc_info(p).map_or(p + 1, |(b, n)| (b + n as u64).max(p + 1))))
                        }
                        _ => None,
                    })
                    .collect(),
            };
            st.compute_op(&ranges, l.kernel.name)?;
        }
        let args: Vec<diffuse_emu::Arg> = l
            .args
            .iter()
            .map(|a| match *a {
                KernelArg::Ptr(p) | KernelArg::PtrBf16(p) => diffuse_emu::Arg::Ptr(p),
                KernelArg::I32(v) => diffuse_emu::Arg::I32(v),
                KernelArg::U32(v) => diffuse_emu::Arg::U32(v),
                KernelArg::U64(v) => diffuse_emu::Arg::U64(v),
                KernelArg::F32(v) => diffuse_emu::Arg::F32(v),
            })
            .collect();
        let (g, b) = (l.grid, l.block);
        // SAFETY: pointer arguments are checked to point into live emulator
        // allocations, whose overruns fault into guard pages and are
        // reported; the kernels index memory only through their arguments.
        let r = unsafe { self.emu.launch_args(l.kernel.name, (g.x, g.y, g.z), (b.x, b.y, b.z), l.shared_bytes, &args) };
        r.map_err(|e| TensorError::Launch { kernel: l.kernel.name.to_string(), msg: e.to_string() })
    }

    fn synchronize(&self) -> Result<()> {
        self.deferred.take()?; // launches are synchronous; queued copies run now
        let copies = self.streams().synchronize();
        self.run_copies(copies)
    }

    fn host_alloc(&self, bytes: usize) -> Result<u64> {
        let layout = super::host_layout(bytes)?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(TensorError::Cuda(format!("out of host memory allocating {bytes} pinned bytes")));
        }
        // copy-stream copies read pinned memory: from now on the streams are checked
        self.streams().track();
        Ok(p as u64)
    }

    unsafe fn htod_async(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        self.deferred.take()?;
        self.compute_range("a copy to the device", dst, bytes)?;
        // SAFETY: the caller's contract; the compute stream copies at once.
        let src = unsafe { std::slice::from_raw_parts(src as *const u8, bytes) };
        self.emu.htod(src, dst).map_err(mem_err)
    }

    unsafe fn htod_async_on(&self, stream: Stream, src: u64, dst: u64, bytes: usize) -> Result<()> {
        match stream {
            // SAFETY: the caller's contract.
            Stream::Compute => unsafe { self.htod_async(src, dst, bytes) },
            Stream::Copy => {
                self.deferred.take()?;
                self.streams().queue_copy(src, dst, bytes)
            }
        }
    }

    fn event_record(&self) -> Result<u64> {
        self.event_record_on(Stream::Compute)
    }

    fn event_record_on(&self, stream: Stream) -> Result<u64> {
        let mut st = self.streams();
        Ok(match stream {
            Stream::Compute => st.record_compute(),
            Stream::Copy => st.record_copy(),
        })
    }

    fn event_wait(&self, event: u64) -> Result<()> {
        let copies = self.streams().host_wait(event)?;
        self.run_copies(copies)
    }

    fn stream_wait_event(&self, stream: Stream, event: u64) -> Result<()> {
        self.deferred.take()?;
        let copies = self.streams().stream_wait(stream == Stream::Copy, event)?;
        self.run_copies(copies)
    }

    fn event_destroy(&self, event: u64) {
        self.streams().destroy(event);
    }

    fn max_shared_bytes(&self) -> u32 {
        self.emu.max_shared_bytes()
    }

    /// 16 bytes (float4), so that a cached block's pointer can end right
    /// against the guard page behind it.
    fn alignment(&self) -> usize {
        16
    }

    fn has_guard_gaps(&self) -> bool {
        true
    }

    fn guard_gap(&self, ptr: u64, bytes: usize) -> Result<()> {
        self.emu.guard_gap(ptr, bytes).map_err(mem_err)
    }

    fn poison(&self, ptr: u64, bytes: usize) {
        // as fresh emulator memory: NaN, so reads of unwritten outputs show
        if let Err(e) = self.emu.memset(ptr, 0xff, bytes) {
            eprintln!("diffuse emulator: poisoning a reused block: {e}");
        }
    }
}

/// The emulated GPU as a [`Device`].
pub fn emu_device() -> Result<Device> {
    Ok(Device::Gpu(GpuDevice::new(Arc::new(EmuDriver::new()?))?))
}

/// The emulated GPU running every block's threads in `order` (tests run the
/// same op in several orders to catch missing barriers).
pub fn emu_device_with_order(order: ThreadOrder) -> Result<Device> {
    Ok(Device::Gpu(GpuDevice::new(Arc::new(EmuDriver::with_order(order)?))?))
}

/// The emulated GPU with at most `bytes` of dynamic shared memory a block
/// (see [`EmuDriver::with_max_shared_bytes`]).
pub fn emu_device_with_max_shared(bytes: u32) -> Result<Device> {
    Ok(Device::Gpu(GpuDevice::new(Arc::new(EmuDriver::with_max_shared_bytes(bytes)?))?))
}

/// One line for `diffuse info`: kernels, workers, context switch, order.
pub fn emu_probe() -> String {
    diffuse_emu::probe()
}
