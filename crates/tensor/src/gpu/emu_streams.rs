//! The emulator's two streams, modelled so that a missing event wait is an
//! error rather than luck. The emulator runs kernels at once (the compute
//! stream is always complete), so the copy stream is where order can go
//! wrong, and it is made adversarial:
//!
//! - A copy queued on the copy stream does NOT run when queued: it waits in
//!   a queue and runs as LATE as the recorded dependencies allow — when the
//!   compute stream or the host waits on an event recorded on the copy
//!   stream after it, or at a device synchronisation. It reads its pinned
//!   source then, as a DMA engine would (a host that rewrote the source
//!   too early sends the new bits).
//! - A compute operation (launch, copy, memset) touching memory that a
//!   queued copy writes is an error: the compute stream did not wait for
//!   the copy's event (read-after-write across streams).
//! - A copy queued into memory that compute work issued after the copy
//!   stream's last wait on a compute event touches is an error: on a GPU
//!   the copy could overwrite it before that work has read it
//!   (write-after-read across streams).
//!
//! What compute work touches is known by its pointer arguments: a launch
//! is taken to touch its pointers' allocations from the pointer on; memory
//! reached through pointers stored in device memory (the multi-tensor
//! tables) is not seen. Nothing is tracked until pinned host memory (the
//! only source a copy-stream copy may read) is first allocated, so other
//! work pays nothing.

use crate::{Result, TensorError};
use std::collections::{HashMap, VecDeque};

/// A copy waiting on the copy stream.
struct Pending {
    /// Its place on the copy stream (1-based).
    seq: u64,
    src: u64,
    dst: u64,
    bytes: usize,
}

/// Memory a compute operation touched, and its place on the compute stream.
struct Touch {
    seq: u64,
    lo: u64,
    hi: u64,
    what: &'static str,
}

/// What an event stands for: the work queued on its stream before it.
#[derive(Clone, Copy)]
enum Event {
    /// Compute operations issued before it.
    Compute(u64),
    /// Copies queued on the copy stream before it.
    Copy(u64),
}

/// Keeps the touch log bounded when the copy stream never waits (a bug that
/// the next copy into touched memory reports anyway).
const MAX_TOUCHES: usize = 1 << 16;

#[derive(Default)]
pub(crate) struct Streams {
    used: bool,
    queue: VecDeque<Pending>,
    copies_queued: u64,
    compute_ops: u64,
    /// Compute operations the copy stream is ordered after (its waits on
    /// compute events, and the host's waits).
    copy_waited_for: u64,
    /// Compute operations since `copy_waited_for`, for the write-after-read check.
    touches: VecDeque<Touch>,
    events: HashMap<u64, Event>,
    next_event: u64,
}

fn overlaps(lo: u64, hi: u64, p: &Pending) -> bool {
    lo < p.dst + p.bytes as u64 && p.dst < hi
}

impl Streams {
    /// Starts tracking (pinned memory exists, so copy-stream copies may follow).
    pub(crate) fn track(&mut self) {
        self.used = true;
    }

    /// A compute operation touching `ranges` (each `[lo, hi)`): a kernel's
    /// name or what the copy or memset is; an error when a queued copy
    /// writes any of them.
    pub(crate) fn compute_op(&mut self, ranges: &[(u64, u64)], what: &'static str) -> Result<()> {
        if !self.used {
            return Ok(());
        }
        for &(lo, hi) in ranges {
            if let Some(p) = self.queue.iter().find(|p| overlaps(lo, hi, p)) {
                return Err(TensorError::Cuda(format!(
                    "emulator streams: {} touches [{lo:#x}, {hi:#x}) while copy #{} into [{:#x}, {:#x}) is still \
                     queued on the copy stream: the compute stream did not wait on an event recorded after that copy",
                    what,
                    p.seq,
                    p.dst,
                    p.dst + p.bytes as u64
                )));
            }
        }
        self.compute_ops += 1;
        let seq = self.compute_ops;
        if !ranges.is_empty() {
            for &(lo, hi) in ranges {
                self.touches.push_back(Touch { seq, lo, hi, what });
            }
            while self.touches.len() > MAX_TOUCHES {
                self.touches.pop_front();
            }
        }
        Ok(())
    }

    /// Queues a copy on the copy stream (not run yet); an error when compute
    /// work the copy stream is not ordered after touches its destination.
    pub(crate) fn queue_copy(&mut self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        self.used = true;
        let p = Pending { seq: self.copies_queued + 1, src, dst, bytes };
        if let Some(t) = self.touches.iter().rev().find(|t| t.seq > self.copy_waited_for && overlaps(t.lo, t.hi, &p)) {
            return Err(TensorError::Cuda(format!(
                "emulator streams: copy #{} into [{dst:#x}, {:#x}) on the copy stream may overwrite memory that {} \
                 (compute operation #{}) may still be using: the copy stream did not wait on an event recorded after it",
                p.seq,
                dst + bytes as u64,
                t.what,
                t.seq
            )));
        }
        self.copies_queued += 1;
        self.queue.push_back(p);
        Ok(())
    }

    fn new_event(&mut self, e: Event) -> u64 {
        self.next_event += 1;
        self.events.insert(self.next_event, e);
        self.next_event
    }

    pub(crate) fn record_compute(&mut self) -> u64 {
        let e = Event::Compute(self.compute_ops);
        self.new_event(e)
    }

    pub(crate) fn record_copy(&mut self) -> u64 {
        let e = Event::Copy(self.copies_queued);
        self.new_event(e)
    }

    fn event(&self, id: u64) -> Result<Event> {
        self.events
            .get(&id)
            .copied()
            .ok_or_else(|| TensorError::Cuda(format!("emulator streams: event {id} was not recorded or is destroyed")))
    }

    /// The copies that must run before work waiting on `event` (the copy
    /// stream's copies up to it), taken off the queue in order; the copy
    /// stream's order after compute work when the waiter is the copy stream
    /// or the host.
    fn due(&mut self, event: Event, copy_stream_waits: bool) -> Vec<Pending> {
        match event {
            Event::Copy(n) => {
                let mut out = Vec::new();
                while self.queue.front().is_some_and(|p| p.seq <= n) {
                    out.extend(self.queue.pop_front());
                }
                out
            }
            Event::Compute(n) => {
                if copy_stream_waits {
                    self.order_copy_stream_after(n);
                }
                Vec::new()
            }
        }
    }

    fn order_copy_stream_after(&mut self, compute_ops: u64) {
        self.copy_waited_for = self.copy_waited_for.max(compute_ops);
        while self.touches.front().is_some_and(|t| t.seq <= self.copy_waited_for) {
            self.touches.pop_front();
        }
    }

    /// A stream waits on `event` on the device: the copies to run now.
    pub(crate) fn stream_wait(&mut self, copy_stream: bool, event: u64) -> Result<Vec<(u64, u64, usize)>> {
        let e = self.event(event)?;
        Ok(self.due(e, copy_stream).into_iter().map(|p| (p.src, p.dst, p.bytes)).collect())
    }

    /// The host waits on `event`: the copies to run now (a compute event
    /// orders later copies after the compute work before it).
    pub(crate) fn host_wait(&mut self, event: u64) -> Result<Vec<(u64, u64, usize)>> {
        let e = self.event(event)?;
        Ok(self.due(e, true).into_iter().map(|p| (p.src, p.dst, p.bytes)).collect())
    }

    /// The device is synchronised: every queued copy runs, and later
    /// copies are ordered after everything issued so far.
    pub(crate) fn synchronize(&mut self) -> Vec<(u64, u64, usize)> {
        let n = self.compute_ops;
        self.order_copy_stream_after(n);
        self.queue.drain(..).map(|p| (p.src, p.dst, p.bytes)).collect()
    }

    pub(crate) fn destroy(&mut self, event: u64) {
        self.events.remove(&event);
    }

    /// Whether the copy stream has been used (compute work is tracked from then on).
    pub(crate) fn tracking(&self) -> bool {
        self.used
    }

    /// Copies queued on the copy stream and not run yet.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }
}
