//! Constant tables of the multi-tensor launches (device pointers, lengths,
//! chunk prefix sums), uploaded once and reused while their contents are
//! the same. With the model in flat buffers (`ops::flat`) these never change,
//! so a steady-state step uploads none of them; tensors that moved simply
//! miss and are uploaded again. Least recently used tables are given back
//! beyond [`TableCache::CAPACITY`], except those a live graph reads.
//! A table first asked for during a graph capture (the fresh gradients'
//! pointers, which stay put while the graph lives) is not part of the
//! graph's work: the emulator uploads it at once, outside the recording; a
//! driver graph (CUDA), whose captured work has not run yet, gets it
//! uploaded right after the capture ends, before its first launch.

use super::pool::{Block, CachingAllocator, StreamId};
use super::{CountedDriver, GpuDriver};
use crate::Result;
use std::collections::HashMap;

struct Entry {
    block: Block,
    last_use: u64,
    /// Live graphs whose recorded launches read this table.
    graph_refs: usize,
}

#[derive(Default)]
pub(crate) struct TableCache {
    entries: HashMap<Vec<u64>, Entry>,
    clock: u64,
    /// While a graph is captured: the tables its launches read.
    captured: Option<Vec<u64>>,
    /// Uploads of a driver capture, queued after it ends: (address, values).
    deferred: Vec<(u64, Vec<u64>)>,
}

impl TableCache {
    /// Tables kept; a step of the trainer uses about a dozen.
    pub const CAPACITY: usize = 64;

    /// The device address of a table holding `values` (uploaded on a miss).
    /// `native`: a driver graph is being captured (see the module docs).
    pub fn get(
        &mut self,
        driver: &CountedDriver,
        pool: &CachingAllocator,
        stream: StreamId,
        values: &[u64],
        native: bool,
    ) -> Result<u64> {
        self.clock += 1;
        let clock = self.clock;
        if !self.entries.contains_key(values) {
            self.evict(driver, pool, stream);
            let block = pool.alloc(driver, 8 * values.len().max(1), stream)?;
            let uploaded = match (self.captured.is_some(), native) {
                (false, _) => driver.htod(bytemuck::cast_slice(values), block.ptr),
                (true, false) => driver.htod_outside_capture(bytemuck::cast_slice(values), block.ptr),
                (true, true) => {
                    self.deferred.push((block.ptr, values.to_vec()));
                    Ok(())
                }
            };
            if let Err(e) = uploaded {
                pool.free(driver, block, stream);
                return Err(e);
            }
            self.entries.insert(values.to_vec(), Entry { block, last_use: clock, graph_refs: 0 });
        }
        let e = self.entries.get_mut(values).ok_or_else(|| crate::TensorError::Cuda("table cache".into()))?;
        e.last_use = clock;
        if let Some(c) = self.captured.as_mut() {
            e.graph_refs += 1;
            c.push(e.block.ptr);
        }
        Ok(e.block.ptr)
    }

    /// Gives back the least recently used table no graph reads while full.
    fn evict(&mut self, driver: &dyn GpuDriver, pool: &CachingAllocator, stream: StreamId) {
        if self.entries.len() < Self::CAPACITY {
            return;
        }
        let victim = self.entries.iter().filter(|(_, e)| e.graph_refs == 0).min_by_key(|(_, e)| e.last_use);
        if let Some(key) = victim.map(|(k, _)| k.clone()) {
            if let Some(e) = self.entries.remove(&key) {
                // stream order: kernels queued before that read it run first
                pool.free(driver, e.block, stream);
            }
        }
    }

    pub fn begin_capture(&mut self) {
        self.captured = Some(Vec::new());
    }

    /// The tables the captured launches read (pinned until [`Self::unpin`])
    /// and the uploads a driver graph needs before its first launch.
    pub fn end_capture(&mut self) -> (Vec<u64>, Vec<(u64, Vec<u64>)>) {
        (self.captured.take().unwrap_or_default(), std::mem::take(&mut self.deferred))
    }

    /// A graph that read these tables was dropped.
    pub fn unpin(&mut self, ptrs: &[u64]) {
        for e in self.entries.values_mut() {
            let n = ptrs.iter().filter(|&&p| p == e.block.ptr).count();
            e.graph_refs = e.graph_refs.saturating_sub(n);
        }
    }

    /// Gives every table back (the device is going away).
    pub fn clear(&mut self, driver: &dyn GpuDriver, pool: &CachingAllocator, stream: StreamId) {
        for (_, e) in self.entries.drain() {
            pool.free(driver, e.block, stream);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}
