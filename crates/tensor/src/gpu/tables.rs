//! Constant tables of the multi-tensor launches (device pointers, lengths,
//! chunk prefix sums), uploaded once and reused while their contents are
//! the same. With the model in flat buffers (`ops::flat`) these never change,
//! so a steady-state step uploads none of them; tensors that moved simply
//! miss and are uploaded again. Least recently used tables are given back
//! beyond [`TableCache::CAPACITY`], except those a live graph reads.

use super::pool::{Block, CachingAllocator, StreamId};
use super::GpuDriver;
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
}

impl TableCache {
    /// Tables kept; a step of the trainer uses about a dozen.
    pub const CAPACITY: usize = 64;

    /// The device address of a table holding `values` (uploaded on a miss).
    pub fn get(
        &mut self,
        driver: &dyn GpuDriver,
        pool: &CachingAllocator,
        stream: StreamId,
        values: &[u64],
    ) -> Result<u64> {
        self.clock += 1;
        let clock = self.clock;
        if !self.entries.contains_key(values) {
            self.evict(driver, pool, stream);
            let block = pool.alloc(driver, 8 * values.len().max(1), stream)?;
            if let Err(e) = driver.htod(bytemuck::cast_slice(values), block.ptr) {
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

    /// The tables the captured launches read (pinned until [`Self::unpin`]).
    pub fn end_capture(&mut self) -> Vec<u64> {
        self.captured.take().unwrap_or_default()
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
