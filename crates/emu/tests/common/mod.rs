//! Helpers shared by the emulator's integration tests.
#![allow(dead_code)]

use diffuse_emu::{Arg, Dim3, EmuError, Emulator, ThreadOrder};

/// The thread orders every semantics test runs under.
pub const ORDERS: [ThreadOrder; 6] = [
    ThreadOrder::Forward,
    ThreadOrder::Reverse,
    ThreadOrder::Shuffle(1),
    ThreadOrder::Shuffle(0xdead_beef),
    ThreadOrder::WarpAhead,
    ThreadOrder::WarpAheadReverse,
];

pub fn emu() -> Emulator {
    Emulator::new().expect("the CUDA emulator runtime loads")
}

/// Launches with typed arguments (tests only ever pass valid device pointers).
pub fn launch(
    emu: &Emulator,
    name: &str,
    grid: impl Into<Dim3>,
    block: impl Into<Dim3>,
    shared: u32,
    args: &[Arg],
) -> Result<(), EmuError> {
    // SAFETY: the test kernels only touch memory through their pointer arguments.
    unsafe { emu.launch_args(name, grid, block, shared, args) }
}

/// A small deterministic generator (splitmix64).
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
}
