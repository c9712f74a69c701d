//! A GPU driver that runs nothing and counts everything: the launch code of
//! every op (grids, blocks, shared memory, workspaces, argument checks) runs
//! exactly as on a GPU or the emulator, but kernels are not executed and
//! memory is not backed (reads give zeros). It tells what a GPU is asked to
//! do — launches, their shapes, allocations, copies, synchronisations — at
//! sizes where executing the kernels on the emulator would take hours.

use diffuse_tensor::gpu::{GpuDevice, GpuDriver, Launch};
use diffuse_tensor::{Device, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One kernel's launches: how many, and the largest grid and block seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelLaunches {
    pub launches: u64,
    /// Blocks summed over its launches.
    pub blocks: u64,
    pub max_grid: [u32; 3],
    pub block: [u32; 3],
    pub max_shared_bytes: u32,
}

/// Everything asked of the driver since the last reset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub launches: u64,
    pub allocs: u64,
    pub frees: u64,
    pub alloc_bytes: u64,
    pub htod: u64,
    pub htod_bytes: u64,
    pub dtoh: u64,
    pub dtoh_bytes: u64,
    pub dtod: u64,
    pub dtod_bytes: u64,
    pub memsets: u64,
    pub syncs: u64,
    pub by_kernel: BTreeMap<&'static str, KernelLaunches>,
}

impl Counts {
    pub fn to_json(&self) -> serde_json::Value {
        let kernels: serde_json::Map<String, serde_json::Value> = self
            .by_kernel
            .iter()
            .map(|(name, k)| {
                let v = serde_json::json!({
                    "launches": k.launches,
                    "blocks": k.blocks,
                    "max_grid": k.max_grid,
                    "block": k.block,
                    "max_shared_bytes": k.max_shared_bytes,
                });
                (name.to_string(), v)
            })
            .collect();
        serde_json::json!({
            "launches": self.launches,
            "allocs": self.allocs,
            "frees": self.frees,
            "alloc_bytes": self.alloc_bytes,
            "htod": self.htod,
            "htod_bytes": self.htod_bytes,
            "dtoh": self.dtoh,
            "dtoh_bytes": self.dtoh_bytes,
            "dtod": self.dtod,
            "dtod_bytes": self.dtod_bytes,
            "memsets": self.memsets,
            "syncs": self.syncs,
            "kernels": kernels,
        })
    }
}

/// The counting driver; `device()` gives a `Device` backed by it.
pub struct CountingDriver {
    counts: Mutex<Counts>,
    next_ptr: AtomicU64,
}

impl CountingDriver {
    pub fn new() -> Arc<CountingDriver> {
        Arc::new(CountingDriver { counts: Mutex::new(Counts::default()), next_ptr: AtomicU64::new(1 << 40) })
    }

    pub fn device(self: &Arc<Self>) -> Device {
        // with the engine's caching allocator, as a real device has it
        Device::Gpu(GpuDevice::with_alloc(self.clone(), diffuse_tensor::gpu::pool::AllocConfig::default()))
    }

    /// The counts so far, and zero them.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // a poisoned lock only means another thread panicked mid-count
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl GpuDriver for CountingDriver {
    fn name(&self) -> String {
        "emu (launches counted, kernels not run)".into()
    }

    /// An H100's opt-in maximum (227 KiB), so the launch code picks the
    /// tiles the estimates are for.
    fn max_shared_bytes(&self) -> u32 {
        227 * 1024
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        let mut c = self.lock();
        c.allocs += 1;
        c.alloc_bytes += bytes as u64;
        // distinct, 256-byte aligned addresses, as cuMemAlloc gives
        Ok(self.next_ptr.fetch_add((bytes as u64).div_ceil(256).max(1) * 256, Ordering::Relaxed))
    }

    fn free(&self, _ptr: u64) {
        self.lock().frees += 1;
    }

    fn htod(&self, src: &[u8], _dst: u64) -> Result<()> {
        let mut c = self.lock();
        c.htod += 1;
        c.htod_bytes += src.len() as u64;
        Ok(())
    }

    fn dtoh(&self, _src: u64, dst: &mut [u8]) -> Result<()> {
        dst.fill(0);
        let mut c = self.lock();
        c.dtoh += 1;
        c.dtoh_bytes += dst.len() as u64;
        Ok(())
    }

    fn dtod(&self, _src: u64, _dst: u64, bytes: usize) -> Result<()> {
        let mut c = self.lock();
        c.dtod += 1;
        c.dtod_bytes += bytes as u64;
        Ok(())
    }

    fn memset_zero(&self, _dst: u64, _bytes: usize) -> Result<()> {
        self.lock().memsets += 1;
        Ok(())
    }

    fn launch(&self, launch: &Launch<'_>) -> Result<()> {
        let mut c = self.lock();
        c.launches += 1;
        let k = c.by_kernel.entry(launch.kernel.name).or_default();
        k.launches += 1;
        let (g, b) = (launch.grid, launch.block);
        k.blocks += u64::from(g.x) * u64::from(g.y) * u64::from(g.z);
        k.max_grid = [k.max_grid[0].max(g.x), k.max_grid[1].max(g.y), k.max_grid[2].max(g.z)];
        k.block = [b.x, b.y, b.z];
        k.max_shared_bytes = k.max_shared_bytes.max(launch.shared_bytes);
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.lock().syncs += 1;
        Ok(())
    }
}
