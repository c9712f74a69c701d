//! Shared by the fuzz and memory tests: a counting global allocator (so a
//! test can assert how much a call allocated at its peak), the fixed-seed
//! proptest configuration, and the memory budget the tests run under.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use diffuse_trainer::memory_budget::{BudgetSource, MemoryBudget};
use proptest::test_runner::{Config as ProptestConfig, RngSeed};

/// The system allocator, counting the bytes in use and their peak.
pub struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Serialises measured sections (tests of one binary run on parallel threads).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` alone and returns its result and the peak of bytes it had
/// allocated beyond what was in use when it started.
pub fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _guard = serial();
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f();
    (out, PEAK.load(Relaxed).saturating_sub(base))
}

/// The budget every test of these binaries runs under, whatever the machine.
pub const TEST_BUDGET: u64 = 128 << 20;

/// Sets [`TEST_BUDGET`] as the process's memory budget.
pub fn use_test_budget() {
    MemoryBudget::set_global(MemoryBudget::new(TEST_BUDGET, BudgetSource::Flag));
    assert_eq!(MemoryBudget::global().map(|b| b.limit).ok(), Some(TEST_BUDGET));
}

/// True when `DIFFUSE_EXPLORE=1`: more cases from fresh seeds.
pub fn explore() -> bool {
    std::env::var("DIFFUSE_EXPLORE").is_ok_and(|v| v == "1")
}

/// `cases` from a fixed seed in CI; 50x the cases from a random seed in explore mode.
pub fn fixed_seed(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases: if explore() { cases * 50 } else { cases },
        rng_seed: if explore() { RngSeed::Random } else { RngSeed::Fixed(seed) },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
