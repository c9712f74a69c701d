//! NCCL, loaded at run time. cudarc's `nccl` bindings look for
//! `libnccl.so.<CUDA major>` (13 for this workspace's cudarc), but NCCL
//! ships as `libnccl.so.2` (the `nvidia-nccl-cu12` wheel, distribution
//! packages), so the few functions used here are declared and loaded with
//! libloading: `DIFFUSE_NCCL_LIB` (a path) if set, else `libnccl.so.2`,
//! then `libnccl.so`, through the dynamic loader's search path
//! (`scripts/cuda-env.sh` adds the wheel's directory).
//!
//! Blocking collectives are queued on the device's own stream (the one every
//! kernel and copy of that device uses), so they are ordered after the work
//! that wrote their tensors and before the work that reads them, with no
//! host synchronisation. A started all-reduce (a gradient bucket during the
//! backward) runs on the device's communication stream instead: that stream
//! waits on an event recorded where the bucket became ready on the compute
//! stream, and `finish` makes the compute stream wait on an event after the
//! all-reduce, so the backward's next kernels run beside it and the
//! optimiser runs after it. A bucket is one NCCL group (one fused launch).
//! NCCL's sum order is fixed by its algorithm and topology, not by rank:
//! run to run it is deterministic for one machine and configuration.
//!
//! Not exercised in CI (no GPU): the in-process communicator and the
//! rendezvous are; `scripts/gpu-check.sh` runs this one on a multi-GPU host.

use super::{CommError, Communicator, PendingReduce, Result};
use crate::gpu::GpuDevice;
use crate::{Storage, Tensor};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Arc, Mutex, OnceLock};

/// NCCL's unique id: 128 opaque bytes made by rank 0, handed to every rank.
pub const UNIQUE_ID_BYTES: usize = 128;

#[repr(C)]
#[derive(Clone, Copy)]
struct NcclUniqueId {
    internal: [c_char; UNIQUE_ID_BYTES],
}

type RawComm = *mut c_void;
type Stream = *mut c_void;
const NCCL_FLOAT32: c_int = 7;
const NCCL_SUM: c_int = 0;

struct Lib {
    _lib: libloading::Library,
    get_unique_id: unsafe extern "C" fn(*mut NcclUniqueId) -> c_int,
    comm_init_rank: unsafe extern "C" fn(*mut RawComm, c_int, NcclUniqueId, c_int) -> c_int,
    all_reduce: unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, RawComm, Stream) -> c_int,
    broadcast: unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, RawComm, Stream) -> c_int,
    group_start: unsafe extern "C" fn() -> c_int,
    group_end: unsafe extern "C" fn() -> c_int,
    comm_destroy: unsafe extern "C" fn(RawComm) -> c_int,
    comm_abort: unsafe extern "C" fn(RawComm) -> c_int,
    get_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    get_version: unsafe extern "C" fn(*mut c_int) -> c_int,
}

fn load() -> std::result::Result<Lib, String> {
    let names: Vec<String> = match std::env::var("DIFFUSE_NCCL_LIB") {
        Ok(p) if !p.is_empty() => vec![p],
        _ => vec!["libnccl.so.2".into(), "libnccl.so".into()],
    };
    let mut errors = Vec::new();
    for name in &names {
        // SAFETY: loading NCCL runs its initialisers, which have no preconditions.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return symbols(lib).map_err(|e| format!("{name}: {e}")),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Err(format!(
        "libnccl.so.2 could not be loaded ({}): pip install nvidia-nccl-cu12 and put its nvidia/nccl/lib on \
         LD_LIBRARY_PATH (scripts/cuda-env.sh does for .cuda-wheels/), or set DIFFUSE_NCCL_LIB to the library",
        errors.join("; ")
    ))
}

fn symbols(lib: libloading::Library) -> std::result::Result<Lib, libloading::Error> {
    // SAFETY: each symbol is declared with NCCL 2's C signature (nccl.h).
    unsafe {
        Ok(Lib {
            get_unique_id: *lib.get(b"ncclGetUniqueId\0")?,
            comm_init_rank: *lib.get(b"ncclCommInitRank\0")?,
            all_reduce: *lib.get(b"ncclAllReduce\0")?,
            broadcast: *lib.get(b"ncclBroadcast\0")?,
            group_start: *lib.get(b"ncclGroupStart\0")?,
            group_end: *lib.get(b"ncclGroupEnd\0")?,
            comm_destroy: *lib.get(b"ncclCommDestroy\0")?,
            comm_abort: *lib.get(b"ncclCommAbort\0")?,
            get_error_string: *lib.get(b"ncclGetErrorString\0")?,
            get_version: *lib.get(b"ncclGetVersion\0")?,
            _lib: lib,
        })
    }
}

fn lib() -> Result<&'static Lib> {
    static LIB: OnceLock<std::result::Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load).as_ref().map_err(|e| CommError::Nccl(e.clone()))
}

/// Ok with NCCL's version (e.g. 22703 for 2.27.3) when the library loads;
/// else why not.
pub fn nccl_version() -> Result<i32> {
    let l = lib()?;
    let mut v = 0;
    // SAFETY: writes one int.
    check(l, "ncclGetVersion", unsafe { (l.get_version)(&mut v) })?;
    Ok(v)
}

fn check(l: &Lib, what: &str, code: c_int) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: NCCL returns a static string for every result code.
    let msg = unsafe { CStr::from_ptr((l.get_error_string)(code)) }.to_string_lossy().into_owned();
    Err(CommError::Nccl(format!("{what}: {msg} (code {code})")))
}

/// A new NCCL unique id (rank 0 makes it; the others receive it).
pub fn unique_id() -> Result<[u8; UNIQUE_ID_BYTES]> {
    let l = lib()?;
    let mut id = NcclUniqueId { internal: [0; UNIQUE_ID_BYTES] };
    // SAFETY: writes the 128-byte id.
    check(l, "ncclGetUniqueId", unsafe { (l.get_unique_id)(&mut id) })?;
    Ok(id.internal.map(|c| c as u8))
}

/// The NCCL communicators of this process, so that a failing rank aborts
/// every local one (a rank blocked in a collective is then released).
#[derive(Default)]
pub struct LocalComms {
    comms: Mutex<Vec<usize>>,
}

/// One rank on one CUDA device.
pub struct NcclComm {
    comm: RawComm,
    rank: usize,
    world: usize,
    device: GpuDevice,
    local: Arc<LocalComms>,
}

// SAFETY: an NCCL communicator may be used from any thread, one at a time
// (this rank's worker thread); abort from another thread is allowed.
unsafe impl Send for NcclComm {}
// SAFETY: only `abort` is called from another thread, which NCCL allows
// (ncclCommAbort is how a blocked communicator is released).
unsafe impl Sync for NcclComm {}

impl NcclComm {
    /// Joins the group `id` with all of this process's ranks at once, one
    /// `(device, rank)` each, from one thread inside one NCCL group: either
    /// every local communicator is built or every one fails with the same
    /// error. (Built one per worker thread instead, a rank that failed before
    /// its init would leave the others blocked in `ncclCommInitRank`.)
    pub fn new_local_group(
        ranks: &[(GpuDevice, usize)],
        world: usize,
        id: &[u8; UNIQUE_ID_BYTES],
        local: Arc<LocalComms>,
    ) -> Result<Vec<NcclComm>> {
        let l = lib()?;
        let raw_id = NcclUniqueId { internal: id.map(|b| b as c_char) };
        let w = c_int::try_from(world).map_err(|_| CommError::Nccl(format!("world size {world} is out of range")))?;
        let mut raws: Vec<RawComm> = vec![std::ptr::null_mut(); ranks.len()];
        // SAFETY: opens the group that the loop's inits join.
        check(l, "ncclGroupStart", unsafe { (l.group_start)() })?;
        let mut first_err = Ok(());
        for ((device, rank), raw) in ranks.iter().zip(raws.iter_mut()) {
            // NCCL takes the device of each init from the thread's current
            // context, so bind this rank's before its call.
            let bound = device.driver().bind_cuda_stream().map_err(CommError::from).and_then(|s| {
                s.map(|_| ()).ok_or_else(|| {
                    CommError::Nccl(format!("{} is not a CUDA device (NCCL needs real GPUs)", device.name()))
                })
            });
            let r = c_int::try_from(*rank).map_err(|_| CommError::Nccl(format!("rank {rank} is out of range")));
            first_err = first_err.and(bound).and_then(|()| {
                let r = r?;
                // SAFETY: raw is written by NCCL when the group ends; id is 128 bytes.
                check(l, "ncclCommInitRank", unsafe { (l.comm_init_rank)(raw, w, raw_id, r) })
            });
            if first_err.is_err() {
                break;
            }
        }
        // SAFETY: closes the group opened above (also after an error, so
        // that NCCL never waits for inits that were not made).
        let end = check(l, "ncclGroupEnd", unsafe { (l.group_end)() });
        if let Err(e) = first_err.and(end) {
            for &c in raws.iter().filter(|c| !c.is_null()) {
                // SAFETY: a communicator of a failed group; released once.
                unsafe { (l.comm_abort)(c) };
            }
            return Err(e);
        }
        let mut comms = local.comms.lock().unwrap_or_else(|p| p.into_inner());
        comms.extend(raws.iter().map(|&c| c as usize));
        drop(comms);
        Ok(ranks
            .iter()
            .zip(raws)
            .map(|((device, rank), comm)| NcclComm {
                comm,
                rank: *rank,
                world,
                device: device.clone(),
                local: local.clone(),
            })
            .collect())
    }

    fn stream(&self) -> Result<Stream> {
        let s = self.device.driver().bind_cuda_stream()?;
        s.map(|s| s as Stream).ok_or_else(|| CommError::Nccl("not a CUDA device".into()))
    }

    /// Each tensor's device pointer (made unique first: the collective
    /// writes in place) and length.
    fn pointers(&self, bucket: &mut [&mut Tensor]) -> Result<Vec<(u64, usize)>> {
        let mut out = Vec::with_capacity(bucket.len());
        for t in bucket.iter_mut() {
            let n = t.numel();
            match t.storage_mut() {
                Storage::Gpu(g) if g.device().same(&self.device) => {
                    g.make_unique()?;
                    out.push((g.ptr(), n));
                }
                _ => return Err(CommError::Nccl(format!("a tensor is not on {}", self.device.name()))),
            }
        }
        Ok(out)
    }

    fn grouped(
        &self,
        what: &str,
        ptrs: &[(u64, usize)],
        stream: Stream,
        call: impl Fn(u64, usize, Stream) -> c_int,
    ) -> Result<()> {
        let l = lib()?;
        // SAFETY: group calls bracket the bucket's collectives.
        check(l, "ncclGroupStart", unsafe { (l.group_start)() })?;
        let mut first_err = Ok(());
        for &(p, n) in ptrs {
            if first_err.is_ok() {
                first_err = check(l, what, call(p, n, stream));
            }
        }
        // SAFETY: closes the group opened above (also after an error).
        let end = check(l, "ncclGroupEnd", unsafe { (l.group_end)() });
        first_err.and(end)
    }
}

impl NcclComm {
    /// The in-place sum of each (pointer, length) over the ranks, queued on `stream`.
    fn all_reduce_on(&self, ptrs: &[(u64, usize)], stream: Stream) -> Result<()> {
        let l = lib()?;
        self.grouped("ncclAllReduce", ptrs, stream, |p, n, s| {
            // SAFETY: in place on n f32 of device memory this tensor owns.
            unsafe { (l.all_reduce)(p as *const c_void, p as *mut c_void, n, NCCL_FLOAT32, NCCL_SUM, self.comm, s) }
        })
    }
}

/// An all-reduce queued on the communication stream.
struct NcclPending {
    device: GpuDevice,
}

impl PendingReduce for NcclPending {
    fn finish(self: Box<Self>, _bucket: &mut [&mut Tensor]) -> Result<()> {
        // the sums are in place: later work on the compute stream waits for them
        Ok(self.device.driver().compute_after_comm()?)
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, bucket: &mut [&mut Tensor]) -> Result<()> {
        let ptrs = self.pointers(bucket)?;
        self.all_reduce_on(&ptrs, self.stream()?)
    }

    fn start_all_reduce_sum(&self, bucket: &mut [&mut Tensor]) -> Result<Box<dyn PendingReduce>> {
        // made unique on the compute stream, before the event the communication stream waits on
        let ptrs = self.pointers(bucket)?;
        let comm_stream = self.device.driver().comm_stream_after_compute()?;
        let stream = comm_stream.ok_or_else(|| CommError::Nccl("not a CUDA device".into()))? as Stream;
        self.all_reduce_on(&ptrs, stream)?;
        Ok(Box::new(NcclPending { device: self.device.clone() }))
    }

    fn broadcast(&self, bucket: &mut [&mut Tensor], root: usize) -> Result<()> {
        let ptrs = self.pointers(bucket)?;
        let l = lib()?;
        let root = c_int::try_from(root).map_err(|_| CommError::Nccl("root out of range".into()))?;
        self.grouped("ncclBroadcast", &ptrs, self.stream()?, |p, n, s| {
            // SAFETY: in place on n f32 of device memory this tensor owns.
            unsafe { (l.broadcast)(p as *const c_void, p as *mut c_void, n, NCCL_FLOAT32, root, self.comm, s) }
        })
    }

    fn barrier(&self) -> Result<()> {
        let mut t = Tensor::zeros([1], crate::DType::F32, &crate::Device::Gpu(self.device.clone()))?;
        self.all_reduce_sum(&mut [&mut t])?;
        self.device.synchronize()?;
        Ok(())
    }

    fn abort(&self, _reason: &str) {
        // Aborting releases every local rank blocked in a collective; their
        // next call fails. The failing rank's own error is the one reported.
        if let Ok(l) = lib() {
            for &c in self.local.comms.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                // SAFETY: c is a live communicator of this process (removed on drop).
                unsafe { (l.comm_abort)(c as RawComm) };
            }
            self.local.comms.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        let mut comms = self.local.comms.lock().unwrap_or_else(|p| p.into_inner());
        // An aborted communicator is gone already.
        if let Some(i) = comms.iter().position(|&c| c == self.comm as usize) {
            comms.remove(i);
            if let Ok(l) = lib() {
                // SAFETY: destroyed once, after its last use.
                unsafe { (l.comm_destroy)(self.comm) };
            }
        }
    }
}
