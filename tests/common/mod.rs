//! Shared support of the workspace's cross-crate tests: the per-device test
//! macro, device opening and `Report`, and the seeded test data, all shared
//! with crates/tensor's tests (included from there by path, not copied).
#![allow(dead_code, unused_imports)]

#[path = "../../crates/tensor/tests/common/device.rs"]
pub mod device;
#[path = "../../crates/tensor/tests/common/rng.rs"]
pub mod rng;

pub use device::*;
pub use rng::*;
