//! Pinned (page-locked) host staging buffers: the host writes a batch here
//! and one asynchronous copy moves it to a device buffer while the device
//! still runs earlier work. A buffer remembers an event recorded after its
//! last copy and waits on it before the host writes again (almost never a
//! real wait: the copy was queued a step earlier). Allocations, frees and
//! those waits are counted in [`DriverCounts`](super::DriverCounts).

use super::{GpuDevice, GpuStorage, Stream};
use crate::{Result, TensorError};

/// `len` f32 of pinned host memory on one device's driver.
pub struct PinnedBuffer {
    device: GpuDevice,
    ptr: u64,
    len: usize,
    /// The event recorded after the last copy out of this buffer.
    pending: Option<u64>,
}

// SAFETY: the buffer owns its memory; the raw address is only dereferenced
// through &mut self (write) or by the driver's copies.
unsafe impl Send for PinnedBuffer {}

impl PinnedBuffer {
    pub fn new(device: &GpuDevice, len: usize) -> Result<PinnedBuffer> {
        let ptr = device.driver().host_alloc(4 * len.max(1))?;
        Ok(PinnedBuffer { device: device.clone(), ptr, len, pending: None })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memory to fill, once the last copy out of it has run.
    pub fn write(&mut self) -> Result<&mut [f32]> {
        self.wait()?;
        // SAFETY: `ptr` holds `len` f32 (host_alloc, page-aligned), owned by
        // self, and no queued copy reads it any more (waited above).
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut f32, self.len) })
    }

    /// Queues a copy of the first `n` elements to `dst` from element
    /// `offset` on; returns at once (the host may write again after the
    /// next [`PinnedBuffer::write`], which waits for this copy).
    pub fn copy_to(&mut self, n: usize, dst: &GpuStorage, offset: usize) -> Result<()> {
        self.copy_to_on(Stream::Compute, n, dst, offset)
    }

    /// As [`PinnedBuffer::copy_to`], queued on `stream`. On the copy stream
    /// the caller orders it with the kernels that touch `dst` by events
    /// (see [`UploadSlots`](super::UploadSlots)).
    pub fn copy_to_on(&mut self, stream: Stream, n: usize, dst: &GpuStorage, offset: usize) -> Result<()> {
        if n > self.len || offset.checked_add(n).is_none_or(|end| end > dst.len()) {
            return Err(TensorError::invalid(
                "pinned copy",
                format!("{n} elements from a buffer of {} to {} elements at {offset}", self.len, dst.len()),
            ));
        }
        if !dst.device().same(&self.device) {
            return Err(TensorError::DeviceMismatch {
                op: "pinned copy",
                a: self.device.name(),
                b: dst.device().name(),
            });
        }
        self.wait()?;
        let d = self.device.driver();
        // SAFETY: the buffer holds n f32; it is not written before the event
        // recorded below has completed (write() waits for it); work touching
        // `dst` on the other stream is the caller's to order.
        unsafe { d.htod_async_on(stream, self.ptr, dst.ptr() + 4 * offset as u64, 4 * n)? };
        self.pending = Some(d.event_record_on(stream)?);
        Ok(())
    }

    fn wait(&mut self) -> Result<()> {
        if let Some(ev) = self.pending.take() {
            let d = self.device.driver();
            let r = d.event_wait(ev);
            d.event_destroy(ev);
            r?;
        }
        Ok(())
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        let _ = self.wait(); // a copy may still read it
                             // SAFETY: allocated by this driver's host_alloc with this size, freed once.
        unsafe { self.device.driver().host_free(self.ptr, 4 * self.len.max(1)) };
    }
}
