//! Double-buffered uploads on the copy stream: while the compute stream
//! runs step k on slot k % 2, the host fills slot (k + 1) % 2's pinned
//! buffer and its copy runs on the copy stream, beside the kernels. Two
//! events per slot keep the streams honest:
//!
//! - `copied`, recorded on the copy stream after the slot's copy: the
//!   compute stream waits on it before the first kernel that reads the
//!   slot ([`UploadSlots::acquire`]);
//! - `released`, recorded on the compute stream once every kernel reading
//!   the slot is queued: the copy stream waits on it before it copies into
//!   the slot again ([`UploadSlots::send`]).
//!
//! The host itself waits only for a slot's previous copy before it rewrites
//! that slot's pinned memory (counted as an event wait; the copy ran a step
//! earlier). The emulator models the copy stream adversarially
//! (`gpu/emu_streams.rs`), so dropping either wait fails a test.

use super::{GpuDevice, GpuStorage, PinnedBuffer, Stream};
use crate::{Result, TensorError};

struct Slot {
    pinned: PinnedBuffer,
    dst: GpuStorage,
    /// On the copy stream, after the slot's last copy (the compute stream has not waited on it yet).
    copied: Option<u64>,
    /// On the compute stream, after the last kernel reading the slot (the copy stream has not waited on it yet).
    released: Option<u64>,
}

/// Two device buffers filled in turn from pinned memory on the copy stream.
pub struct UploadSlots {
    device: GpuDevice,
    slots: [Slot; 2],
    /// The slot the next `send` fills.
    next: usize,
    /// The slot the compute stream reads (acquired, not yet released).
    in_use: Option<usize>,
}

impl UploadSlots {
    /// Slots uploading into `dst` (two buffers of one length on one device),
    /// with a pinned buffer each.
    pub fn new(dst: [GpuStorage; 2]) -> Result<UploadSlots> {
        let [a, b] = dst;
        if a.len() != b.len() || !a.device().same(b.device()) {
            return Err(TensorError::invalid("upload slots", "two buffers of one length on one device"));
        }
        let device = a.device().clone();
        // The buffers come from the compute stream's allocator (maybe reused
        // blocks, maybe just zeroed there): the first copy into each waits
        // for the compute work queued so far.
        let slot = |dst: GpuStorage| -> Result<Slot> {
            let pinned = PinnedBuffer::new(&device, dst.len())?;
            let released = Some(device.driver().event_record_on(Stream::Compute)?);
            Ok(Slot { pinned, dst, copied: None, released })
        };
        Ok(UploadSlots { slots: [slot(a)?, slot(b)?], device, next: 0, in_use: None })
    }

    /// Elements a slot holds.
    pub fn len(&self) -> usize {
        self.slots[0].dst.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slot `slot`'s device buffer (read it only after [`UploadSlots::acquire`]).
    pub fn storage(&self, slot: usize) -> &GpuStorage {
        &self.slots[slot & 1].dst
    }

    /// Fills the next slot's pinned memory with `fill` (the host waits for
    /// that slot's previous copy first) and queues its copy on the copy
    /// stream behind the compute work that last read the slot; the slot.
    pub fn send(&mut self, fill: impl FnOnce(&mut [f32])) -> Result<usize> {
        let s = self.next;
        self.next ^= 1;
        if self.in_use == Some(s) {
            self.release()?; // the kernels reading it so far are all queued
        }
        let d = self.device.driver();
        let slot = &mut self.slots[s];
        fill(slot.pinned.write()?);
        if let Some(ev) = slot.released.take() {
            let waited = d.stream_wait_event(Stream::Copy, ev);
            d.event_destroy(ev);
            waited?;
        }
        let n = slot.dst.len();
        slot.pinned.copy_to_on(Stream::Copy, n, &slot.dst, 0)?;
        let ev = d.event_record_on(Stream::Copy)?;
        if let Some(old) = slot.copied.replace(ev) {
            d.event_destroy(old); // a copy never read (a prefetch undone)
        }
        Ok(s)
    }

    /// Orders the compute stream after `slot`'s copy; the compute work
    /// queued from now on reads the slot until the next `acquire` or
    /// `release` (a slot acquired before is released here).
    pub fn acquire(&mut self, slot: usize) -> Result<&GpuStorage> {
        let slot = slot & 1;
        if self.in_use.is_some_and(|s| s != slot) {
            self.release()?;
        }
        let d = self.device.driver();
        let s = &mut self.slots[slot];
        if let Some(ev) = s.copied.take() {
            let waited = d.stream_wait_event(Stream::Compute, ev);
            d.event_destroy(ev);
            waited?;
        }
        self.in_use = Some(slot);
        Ok(&self.slots[slot].dst)
    }

    /// Every kernel reading the slot in use is queued: records the event
    /// the next copy into it waits on.
    pub fn release(&mut self) -> Result<()> {
        let Some(s) = self.in_use.take() else { return Ok(()) };
        let d = self.device.driver();
        let ev = d.event_record_on(Stream::Compute)?;
        if let Some(old) = self.slots[s].released.replace(ev) {
            d.event_destroy(old);
        }
        Ok(())
    }
}

impl Drop for UploadSlots {
    fn drop(&mut self) {
        let d = self.device.driver();
        for s in &mut self.slots {
            if let Some(ev) = s.copied.take() {
                // the copy must have run before its device buffer is freed
                let _ = d.event_wait(ev);
                d.event_destroy(ev);
            }
            if let Some(ev) = s.released.take() {
                d.event_destroy(ev);
            }
        }
    }
}
