//! The copy stream and the guard gaps of flat buffers, on the emulator:
//! a copy on the copy stream runs only once an event after it is waited
//! on; a kernel touching its destination before that, or a copy into
//! memory a kernel has not been ordered before, is an error; the
//! double-buffered uploads deliver every batch with their two waits a
//! step; and in the no-reuse mode a kernel writing past a view of a flat
//! buffer into the gap before its neighbour is a launch error.

use diffuse_tensor::gpu::emu::EmuDriver;
use diffuse_tensor::gpu::{
    kernels, AllocConfig, AllocMode, Dim3, GpuDevice, GpuStorage, KernelArg, Launch, PinnedBuffer, Stream, UploadSlots,
};
use std::sync::Arc;

fn emu(mode: AllocMode) -> (Arc<EmuDriver>, GpuDevice) {
    let driver = Arc::new(EmuDriver::new().expect("the emulator starts"));
    (driver.clone(), GpuDevice::with_alloc(driver, AllocConfig { mode, limit: None }))
}

/// The allocation mode the environment asks for (the test script runs the
/// `_emu` tests with and without reuse).
fn env_mode() -> AllocMode {
    AllocConfig::from_env().expect("a valid DIFFUSE_GPU_ALLOC").mode
}

/// Awkward-sized values, not zeros.
fn values(n: usize, salt: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ salt) % 1000) as f32 / 250.0 - 2.0).collect()
}

/// `out[i] = s * x[i]` for i < n: one launch reading `x` and writing `out`.
fn scale(g: &GpuDevice, out: u64, x: u64, s: f32, n: usize) -> diffuse_tensor::Result<()> {
    let args = [KernelArg::Ptr(out), KernelArg::Ptr(x), KernelArg::F32(s), KernelArg::U64(n as u64)];
    let launch = Launch {
        kernel: &kernels::elementwise::SCALE_FWD_F32,
        grid: Dim3::x(n.div_ceil(128) as u32),
        block: Dim3::x(128),
        shared_bytes: 0,
        args: &args,
    };
    g.launch(&launch)
}

#[test]
fn a_kernel_reading_a_copy_it_did_not_wait_for_is_an_error_emu() {
    let (emu, g) = emu(env_mode());
    let n = 1037;
    let dst = g.zeros_f32(n).unwrap();
    let out = g.zeros_f32(n).unwrap();
    let mut pinned = PinnedBuffer::new(&g, n).unwrap();
    let v = values(n, 3);
    pinned.write().unwrap().copy_from_slice(&v);
    pinned.copy_to_on(Stream::Copy, n, &dst, 0).unwrap();
    assert_eq!(emu.queued_copies(), 1, "the copy waits on the copy stream");
    let err = scale(&g, out.ptr(), dst.ptr(), 2.0, n).unwrap_err().to_string();
    assert!(err.contains("scale_fwd_f32") && err.contains("did not wait"), "{err}");
    // a copy to the host reads it too
    assert!(dst.download_f32().unwrap_err().to_string().contains("still queued on the copy stream"));

    // With the wait the copy runs first and the kernel reads its bits.
    let d = g.driver();
    let ev = d.event_record_on(Stream::Copy).unwrap();
    let before = g.counts();
    d.stream_wait_event(Stream::Compute, ev).unwrap();
    d.event_destroy(ev);
    assert_eq!(emu.queued_copies(), 0);
    scale(&g, out.ptr(), dst.ptr(), 2.0, n).unwrap();
    let want: Vec<f32> = v.iter().map(|x| 2.0 * x).collect();
    assert_eq!(out.download_f32().unwrap(), want);
    assert_eq!((g.counts() - before).stream_waits, 1);
}

#[test]
fn a_copy_queued_before_the_kernels_reading_its_destination_are_ordered_is_an_error_emu() {
    let (_emu, g) = emu(env_mode());
    let n = 515;
    let mut pinned = PinnedBuffer::new(&g, n).unwrap();
    let dst = g.upload_f32(&values(n, 5)).unwrap();
    let out = g.zeros_f32(n).unwrap();
    scale(&g, out.ptr(), dst.ptr(), 3.0, n).unwrap(); // reads dst
    pinned.write().unwrap().copy_from_slice(&values(n, 6));
    let err = pinned.copy_to_on(Stream::Copy, n, &dst, 0).unwrap_err().to_string();
    assert!(err.contains("scale_fwd_f32") && err.contains("copy stream did not wait"), "{err}");

    // Ordered after the kernel by an event, the copy is fine.
    let d = g.driver();
    let ev = d.event_record_on(Stream::Compute).unwrap();
    d.stream_wait_event(Stream::Copy, ev).unwrap();
    d.event_destroy(ev);
    pinned.copy_to_on(Stream::Copy, n, &dst, 0).unwrap();
    g.synchronize().unwrap(); // runs the queued copy
    assert_eq!(dst.download_f32().unwrap(), values(n, 6));
    assert_eq!(out.download_f32().unwrap(), values(n, 5).iter().map(|x| 3.0 * x).collect::<Vec<_>>());
}

/// The copy reads its pinned source when it runs, as a DMA engine does: a
/// host that rewrites the source before waiting sends the new bits (what
/// `PinnedBuffer::write`'s wait prevents).
#[test]
fn a_queued_copy_reads_its_source_when_it_runs_emu() {
    let (_emu, g) = emu(env_mode());
    let n = 300;
    let dst = g.zeros_f32(n).unwrap();
    let d = g.driver();
    let host = d.host_alloc(4 * n).unwrap();
    // SAFETY: host_alloc gave 4n bytes, page-aligned; freed once below, after the copy ran.
    let src = unsafe { std::slice::from_raw_parts_mut(host as *mut f32, n) };
    src.copy_from_slice(&values(n, 1));
    // SAFETY: `src` holds 4n bytes and outlives the copy (synchronised below).
    unsafe { d.htod_async_on(Stream::Copy, host, dst.ptr(), 4 * n).unwrap() };
    src.copy_from_slice(&values(n, 2)); // too early on a GPU: the copy may not have run
    g.synchronize().unwrap();
    assert_eq!(dst.download_f32().unwrap(), values(n, 2), "the copy ran late, with the rewritten source");
    // SAFETY: from host_alloc(4n), the copy has run.
    unsafe { d.host_free(host, 4 * n) };
}

/// The double-buffered pipeline: batch k + 1 is sent while step k's kernel
/// is queued on the other slot; every step reads its own batch, with one
/// copy-stream copy and two stream waits a step and no host sync.
#[test]
fn upload_slots_deliver_every_batch_while_the_other_slot_is_read_emu() {
    let (emu, g) = emu(env_mode());
    let n = 2053;
    let _tracked = PinnedBuffer::new(&g, 1).unwrap(); // the emulator checks the streams from here on
    let (a, b) = (g.zeros_f32(n).unwrap(), g.zeros_f32(n).unwrap()); // memsets on the compute stream
    let mut slots = UploadSlots::new([a, b]).unwrap(); // the first copies wait for them
    let steps = 7usize;
    let outs: Vec<GpuStorage> = (0..steps).map(|_| g.zeros_f32(n).unwrap()).collect();
    let batch = |k: usize| values(n, 100 + k as u32);
    let mut next = slots.send(|out| out.copy_from_slice(&batch(0))).unwrap();
    let mut per_step = Vec::new();
    for (k, out) in outs.iter().enumerate() {
        let before = g.counts();
        let x = slots.acquire(next).unwrap().ptr();
        scale(&g, out.ptr(), x, 0.5, n).unwrap(); // step k reads its slot
        if k + 1 < steps {
            next = slots.send(|o| o.copy_from_slice(&batch(k + 1))).unwrap();
            assert_eq!(emu.queued_copies(), 1, "batch {} waits on the copy stream while step {k} runs", k + 1);
        }
        per_step.push(g.counts() - before);
    }
    drop(slots);
    for (k, out) in outs.iter().enumerate() {
        let want: Vec<f32> = batch(k).iter().map(|x| 0.5 * x).collect();
        assert_eq!(out.download_f32().unwrap(), want, "step {k} read batch {k}");
    }
    for (k, c) in per_step.iter().enumerate().skip(2).take(steps - 3) {
        assert_eq!((c.copy_stream_copies, c.htod, c.stream_waits), (1, 1, 2), "step {k}: {c:?}");
        assert_eq!((c.host_syncs, c.event_waits, c.allocs, c.launches), (0, 1, 0, 1), "step {k}: {c:?}");
    }
}

/// In the no-reuse mode a gap follows every view of a flat buffer: a kernel
/// writing one element past a view is a launch error naming the gap. With
/// the views packed (no gap; the caching mode's layout) the same write
/// lands silently in the neighbour.
#[test]
fn guard_gaps_catch_a_write_past_a_view_into_its_neighbour() {
    let lens = [128usize, 77, 64];
    let (_emu, g) = emu(AllocMode::Direct);
    assert_eq!(g.view_gap(), 64);
    let (offsets, total) = g.view_layout(&lens);
    assert_eq!((offsets, total), (vec![0, 192, 384], 512), "a gap of at least 64 elements after each view");
    let x = g.upload_f32(&values(lens[0] + 1, 9)).unwrap();

    let base = g.zeros_f32(total).unwrap();
    let (_whole, views) = base.views(&lens).unwrap();
    scale(&g, views[0].ptr(), x.ptr(), 1.0, lens[0]).unwrap(); // in bounds: fine
    let err = scale(&g, views[0].ptr(), x.ptr(), 1.0, lens[0] + 1).unwrap_err().to_string();
    assert!(err.contains("scale_fwd_f32") && err.contains("guard gap at bytes [512, 768)"), "{err}");
    assert!(err.contains("at byte 512"), "{err}");
    let err = scale(&g, views[1].ptr(), x.ptr(), 1.0, lens[1] + 1).unwrap_err().to_string();
    assert!(err.contains("guard gap at bytes [1076, 1536)"), "the odd-length view's gap: {err}");

    // Packed views: the overrun writes the neighbour's first element unseen.
    let packed = g.zeros_f32(GpuStorage::view_offsets(&lens).1).unwrap();
    let (_whole, views) = packed.views_packed(&lens).unwrap();
    scale(&g, views[0].ptr(), x.ptr(), 1.0, lens[0] + 1).unwrap();
    assert_eq!(views[1].download_f32().unwrap()[0], values(lens[0] + 1, 9)[lens[0]], "the neighbour was hit");

    // The caching mode spends nothing on gaps.
    let (_emu, c) = emu(AllocMode::Caching);
    assert_eq!((c.view_gap(), c.view_layout(&lens)), (0, GpuStorage::view_offsets(&lens)));
}
