//! The caching allocator of device memory, shared by both drivers.
//!
//! A freed block is not returned to the driver (cuMemFree synchronises the
//! device) but kept in a free list keyed by its size class and by the stream
//! it was freed on. The stream-order invariant: a block freed on stream S
//! may still be read by kernels queued on S, so it is handed out again only
//! to an allocation on S (whose work is ordered after those kernels), never
//! to another stream, until the device has been synchronised
//! ([`CachingAllocator::synchronized`]) — then every queued kernel has ended
//! and the block is free for any stream. Workspaces (attention's `dvec`,
//! conv's `ws`, group-norm and loss partials) are dropped right after the
//! kernels that read them are queued, and rely on exactly this.
//!
//! Size classes: requests round up to 512 bytes up to 1 MiB, above that to a
//! quarter of the power of two below (at most 25% waste). A block serves
//! only its own class, so steps that ask for the same sizes reuse the same
//! blocks and make no driver call. The pointer handed out ends at the end of
//! its block (rounded to the driver's alignment), so the emulator's guard
//! page still catches overruns; reused blocks are poisoned again (NaN on the
//! emulator). `DIFFUSE_GPU_ALLOC=direct` bypasses the cache (every buffer a
//! driver allocation, freed at once: the emulator's guard pages then also
//! catch use-after-free). `DIFFUSE_GPU_MEMORY_LIMIT` (bytes, or with a
//! K/M/G suffix) caps what the cache holds plus what is in use.

use super::GpuDriver;
use crate::{Result, TensorError};
use std::collections::HashMap;
use std::sync::Mutex;

/// Whether freed device memory is cached for reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocMode {
    /// Blocks are kept and reused in stream order (the default).
    Caching,
    /// Every buffer is a driver allocation, freed when dropped.
    Direct,
}

/// How a device allocates: the mode and an optional limit in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocConfig {
    pub mode: AllocMode,
    pub limit: Option<usize>,
}

impl Default for AllocConfig {
    fn default() -> Self {
        AllocConfig { mode: AllocMode::Caching, limit: None }
    }
}

impl AllocConfig {
    /// From `DIFFUSE_GPU_ALLOC` (`caching` or `direct`) and
    /// `DIFFUSE_GPU_MEMORY_LIMIT`; a value that does not parse is an error.
    pub fn from_env() -> Result<Self> {
        let bad = |var: &str, v: &str, want: &str| TensorError::Cuda(format!("{var}={v:?}: expected {want}"));
        let mode = match std::env::var("DIFFUSE_GPU_ALLOC") {
            Err(_) => AllocMode::Caching,
            Ok(v) => match v.trim() {
                "" | "caching" => AllocMode::Caching,
                "direct" => AllocMode::Direct,
                _ => return Err(bad("DIFFUSE_GPU_ALLOC", &v, "caching or direct")),
            },
        };
        let limit = match std::env::var("DIFFUSE_GPU_MEMORY_LIMIT") {
            Err(_) => None,
            Ok(v) if v.trim().is_empty() => None,
            Ok(v) => {
                Some(parse_bytes(&v).ok_or_else(|| bad("DIFFUSE_GPU_MEMORY_LIMIT", &v, "bytes, such as 8G or 512M"))?)
            }
        };
        Ok(AllocConfig { mode, limit })
    }
}

/// "4096", "512K", "64M", "8G" (binary units) as bytes.
pub fn parse_bytes(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1usize << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<usize>().ok()?.checked_mul(mult)
}

/// A stream of a device. Each device has one today (`StreamId(0)`); the
/// allocator keeps the invariant for any number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamId(pub u32);

/// Memory handed out by the allocator.
#[derive(Debug)]
pub struct Block {
    /// The pointer the caller uses.
    pub ptr: u64,
    /// The driver allocation it lies in.
    base: u64,
    /// The allocation's size (its size class in caching mode).
    class: usize,
}

/// Bytes held and what the cache did, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub in_use_bytes: usize,
    pub cached_bytes: usize,
    /// Most bytes ever held from the driver at once (in use + cached).
    pub peak_reserved_bytes: usize,
    /// Allocations served from the cache.
    pub hits: u64,
    /// Allocations that went to the driver.
    pub misses: u64,
}

/// Free lists by (stream a block was freed on, or None once the device has
/// synchronised; size class).
type FreeLists = HashMap<(Option<StreamId>, usize), Vec<u64>>;

#[derive(Default)]
struct State {
    free: FreeLists,
    stats: PoolStats,
}

/// The caching allocator of one device.
pub struct CachingAllocator {
    config: AllocConfig,
    state: Mutex<State>,
}

/// The size class of a request of `bytes` (see the module docs).
pub fn size_class(bytes: usize) -> usize {
    let r = bytes.max(1).next_multiple_of(512);
    if r <= 1 << 20 {
        return r;
    }
    let below = 1usize << (usize::BITS - 1 - r.leading_zeros());
    r.next_multiple_of(below / 4)
}

impl CachingAllocator {
    pub fn new(config: AllocConfig) -> Self {
        CachingAllocator { config, state: Mutex::new(State::default()) }
    }

    pub fn config(&self) -> AllocConfig {
        self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    /// `bytes` of device memory for work on `stream`.
    pub fn alloc(&self, driver: &dyn GpuDriver, bytes: usize, stream: StreamId) -> Result<Block> {
        if self.config.mode == AllocMode::Direct {
            let ptr = driver.alloc(bytes.max(1))?;
            let mut st = self.lock();
            st.stats.in_use_bytes += bytes;
            st.stats.misses += 1;
            st.stats.peak_reserved_bytes = st.stats.peak_reserved_bytes.max(st.stats.in_use_bytes);
            return Ok(Block { ptr, base: ptr, class: bytes });
        }
        let class = size_class(bytes);
        // The caller's end lies at the block's end (guard page behind it).
        let offset = class - bytes.max(1).next_multiple_of(driver.alignment().max(1)).min(class);
        let mut st = self.lock();
        let reused = [Some(stream), None].iter().find_map(|&s| st.free.get_mut(&(s, class)).and_then(Vec::pop));
        if let Some(base) = reused {
            st.stats.cached_bytes -= class;
            st.stats.in_use_bytes += class;
            st.stats.hits += 1;
            drop(st);
            driver.poison(base + offset as u64, bytes);
            return Ok(Block { ptr: base + offset as u64, base, class });
        }
        if let Some(limit) = self.config.limit {
            if st.stats.in_use_bytes + st.stats.cached_bytes + class > limit {
                Self::release(driver, &mut st);
            }
            if st.stats.in_use_bytes + class > limit {
                let free = limit.saturating_sub(st.stats.in_use_bytes);
                return Err(oom(driver, bytes, &st.stats, format!("{free} bytes free under the limit of {limit}")));
            }
        }
        let base = match driver.alloc(class) {
            Ok(p) => p,
            Err(_) if st.stats.cached_bytes > 0 => {
                // The driver is out of memory: give back the cache and retry.
                Self::release(driver, &mut st);
                driver.alloc(class).map_err(|e| oom_after(driver, bytes, &st.stats, e))?
            }
            Err(e) => return Err(oom_after(driver, bytes, &st.stats, e)),
        };
        st.stats.in_use_bytes += class;
        st.stats.misses += 1;
        st.stats.peak_reserved_bytes = st.stats.peak_reserved_bytes.max(st.stats.in_use_bytes + st.stats.cached_bytes);
        Ok(Block { ptr: base + offset as u64, base, class })
    }

    /// Returns a block freed after the work queued on `stream` that uses it.
    pub fn free(&self, driver: &dyn GpuDriver, block: Block, stream: StreamId) {
        let mut st = self.lock();
        st.stats.in_use_bytes -= block.class;
        if self.config.mode == AllocMode::Direct {
            drop(st);
            driver.free(block.base);
            return;
        }
        st.stats.cached_bytes += block.class;
        st.free.entry((Some(stream), block.class)).or_default().push(block.base);
    }

    /// After the device synchronised: every queued kernel has ended, so a
    /// cached block may go to any stream.
    pub fn synchronized(&self) {
        let mut st = self.lock();
        let keys: Vec<_> = st.free.keys().filter(|(s, _)| s.is_some()).copied().collect();
        for k in keys {
            let blocks = st.free.remove(&k).unwrap_or_default();
            st.free.entry((None, k.1)).or_default().extend(blocks);
        }
    }

    /// Gives every cached block back to the driver.
    pub fn empty_cache(&self, driver: &dyn GpuDriver) {
        Self::release(driver, &mut self.lock());
    }

    fn release(driver: &dyn GpuDriver, st: &mut State) {
        // cuMemFree waits for the device, so blocks still read by queued
        // kernels are safe to free here.
        let mut keys: Vec<_> = st.free.keys().copied().collect();
        keys.sort_by_key(|&(s, c)| (s.map(|s| s.0), c));
        for k in keys {
            for base in st.free.remove(&k).unwrap_or_default() {
                driver.free(base);
                st.stats.cached_bytes -= k.1;
            }
        }
    }
}

fn oom(driver: &dyn GpuDriver, bytes: usize, s: &PoolStats, free: String) -> TensorError {
    TensorError::OutOfMemory {
        device: driver.name(),
        msg: format!(
            "asked for {bytes} bytes (size class {}); {} in use, {} cached, {free}",
            size_class(bytes),
            s.in_use_bytes,
            s.cached_bytes
        ),
    }
}

fn oom_after(driver: &dyn GpuDriver, bytes: usize, s: &PoolStats, e: TensorError) -> TensorError {
    let free = match driver.mem_info() {
        Some((free, total)) => format!("{free} of {total} bytes free on the device"),
        None => "free memory unknown".to_string(),
    };
    match e {
        TensorError::OutOfMemory { .. } | TensorError::Cuda(_) => oom(driver, bytes, s, format!("{free} ({e})")),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{GpuDriver, Launch};
    use std::collections::BTreeSet;

    /// A driver that hands out fresh addresses and records what is live.
    #[derive(Default)]
    struct FakeDriver {
        live: Mutex<BTreeSet<u64>>,
        next: Mutex<u64>,
        /// Fail allocations once this many bytes are live.
        capacity: Option<usize>,
        sizes: Mutex<HashMap<u64, usize>>,
    }

    impl FakeDriver {
        fn live(&self) -> usize {
            self.live.lock().unwrap().len()
        }
    }

    impl GpuDriver for FakeDriver {
        fn max_shared_bytes(&self) -> u32 {
            48 * 1024
        }
        fn name(&self) -> String {
            "fake".into()
        }
        fn alloc(&self, bytes: usize) -> Result<u64> {
            let held: usize = self.sizes.lock().unwrap().values().sum();
            if self.capacity.is_some_and(|c| held + bytes > c) {
                return Err(TensorError::Cuda("out of memory".into()));
            }
            let mut n = self.next.lock().unwrap();
            *n += 1 << 32;
            self.live.lock().unwrap().insert(*n);
            self.sizes.lock().unwrap().insert(*n, bytes);
            Ok(*n)
        }
        fn free(&self, ptr: u64) {
            assert!(self.live.lock().unwrap().remove(&ptr), "double free of {ptr:#x}");
            self.sizes.lock().unwrap().remove(&ptr);
        }
        fn htod(&self, _: &[u8], _: u64) -> Result<()> {
            Ok(())
        }
        fn dtoh(&self, _: u64, _: &mut [u8]) -> Result<()> {
            Ok(())
        }
        fn dtod(&self, _: u64, _: u64, _: usize) -> Result<()> {
            Ok(())
        }
        fn memset_zero(&self, _: u64, _: usize) -> Result<()> {
            Ok(())
        }
        fn launch(&self, _: &Launch<'_>) -> Result<()> {
            Ok(())
        }
        fn synchronize(&self) -> Result<()> {
            Ok(())
        }
    }

    const S0: StreamId = StreamId(0);
    const S1: StreamId = StreamId(1);

    fn caching(limit: Option<usize>) -> CachingAllocator {
        CachingAllocator::new(AllocConfig { mode: AllocMode::Caching, limit })
    }

    #[test]
    fn size_classes_cover_the_request_and_waste_at_most_a_quarter() {
        let mut sizes: Vec<usize> = (0..4000).map(|i| 1 + i * 977).collect();
        sizes.extend((0..200).map(|i| (1usize << 20) + i * 123_457));
        sizes.extend([511, 512, 513, 1 << 20, (1 << 20) + 1, 3 << 29, usize::MAX >> 8]);
        for b in sizes {
            let c = size_class(b);
            assert!(c >= b && c.is_multiple_of(512), "{b} -> {c}");
            assert!(c - b < 512 || (c - b) as f64 <= 0.25 * b as f64, "{b} -> {c}");
            assert_eq!(size_class(c), c, "a class is its own class");
        }
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class((1 << 20) + 1), (1 << 20) + (1 << 18));
    }

    #[test]
    fn steady_state_reuses_blocks_without_driver_calls() {
        let d = FakeDriver::default();
        let a = caching(None);
        let sizes = [4, 1000, 70_000, 3 << 20, 4, 999];
        for round in 0..5 {
            let blocks: Vec<Block> = sizes.iter().map(|&b| a.alloc(&d, b, S0).unwrap()).collect();
            for b in blocks {
                a.free(&d, b, S0);
            }
            assert_eq!(d.live(), sizes.len(), "round {round}: only the first round allocates");
        }
        let s = a.stats();
        assert_eq!((s.misses, s.hits), (6, 24));
        assert_eq!(s.in_use_bytes, 0);
        a.empty_cache(&d);
        assert_eq!(d.live(), 0);
        assert_eq!(a.stats().cached_bytes, 0);
    }

    #[test]
    fn pointers_end_at_the_block_end_and_keep_the_alignment() {
        let d = FakeDriver::default();
        let a = caching(None);
        for bytes in [1, 4, 300, 513, 70_001] {
            let b = a.alloc(&d, bytes, S0).unwrap();
            assert_eq!(b.ptr % 256, 0);
            assert_eq!(b.base + b.class as u64, b.ptr + bytes.next_multiple_of(256) as u64);
            a.free(&d, b, S0);
        }
    }

    /// The stream-order invariant (issue 19, item 3): a workspace freed on
    /// one stream while its kernels may still run is never handed to another
    /// stream until the device has synchronised.
    #[test]
    fn freed_blocks_go_to_another_stream_only_after_a_synchronize() {
        let d = FakeDriver::default();
        let a = caching(None);
        let ws = a.alloc(&d, 4096, S0).unwrap();
        let ws_ptr = ws.ptr;
        a.free(&d, ws, S0); // kernels reading it may still be queued on S0
        let other = a.alloc(&d, 4096, S1).unwrap();
        assert_ne!(other.ptr, ws_ptr, "another stream must not get S0's pending block");
        let same = a.alloc(&d, 4096, S0).unwrap();
        assert_eq!(same.ptr, ws_ptr, "the same stream reuses it in order");
        a.free(&d, same, S0);
        a.synchronized();
        let later = a.alloc(&d, 4096, S1).unwrap();
        assert_eq!(later.ptr, ws_ptr, "after a synchronize any stream may use it");
        a.free(&d, other, S1);
        a.free(&d, later, S1);
    }

    #[test]
    fn the_limit_releases_the_cache_then_reports_what_was_asked() {
        let d = FakeDriver::default();
        let a = caching(Some(8192));
        let x = a.alloc(&d, 4096, S0).unwrap();
        a.free(&d, x, S0);
        // 4096 cached + 6000 -> class 6144 would pass the limit: cache released
        let y = a.alloc(&d, 6000, S0).unwrap();
        assert_eq!(a.stats().cached_bytes, 0);
        assert_eq!(d.live(), 1);
        let err = a.alloc(&d, 4000, S0).unwrap_err().to_string();
        for want in ["out of GPU memory on fake", "asked for 4000 bytes", "6144 in use", "0 cached", "2048 bytes free"]
        {
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
        a.free(&d, y, S0);
    }

    #[test]
    fn driver_out_of_memory_retries_after_emptying_the_cache() {
        let d = FakeDriver { capacity: Some(10_000), ..Default::default() };
        let a = caching(None);
        let x = a.alloc(&d, 6000, S0).unwrap();
        a.free(&d, x, S0);
        let y = a.alloc(&d, 8000, S0).unwrap(); // fits only once the 6144 cached are freed
        assert_eq!(d.live(), 1);
        let err = a.alloc(&d, 5000, S0).unwrap_err().to_string();
        assert!(err.contains("asked for 5000 bytes") && err.contains("8192 in use"), "{err}");
        a.free(&d, y, S0);
    }

    #[test]
    fn direct_mode_frees_at_once() {
        let d = FakeDriver::default();
        let a = CachingAllocator::new(AllocConfig { mode: AllocMode::Direct, limit: None });
        let x = a.alloc(&d, 100, S0).unwrap();
        assert_eq!(x.ptr, x.base);
        a.free(&d, x, S0);
        assert_eq!(d.live(), 0);
        assert_eq!(a.stats().cached_bytes, 0);
    }

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("512K"), Some(512 << 10));
        assert_eq!(parse_bytes(" 8g"), Some(8 << 30));
        assert_eq!(parse_bytes("12x"), None);
        assert_eq!(parse_bytes("M"), None);
    }
}
