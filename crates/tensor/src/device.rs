//! The devices a tensor can live on. A GPU device wraps a driver: the real
//! CUDA driver through cudarc, or the CUDA emulator; both run the same
//! kernels through the same launch code (see `gpu`).

use crate::gpu::GpuDevice;
use std::fmt;

#[derive(Clone)]
pub enum Device {
    /// Host memory and the rayon reference ops.
    Cpu,
    /// A CUDA device, real or emulated.
    Gpu(GpuDevice),
}

impl Device {
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// Waits until the device has finished the work queued on it (a no-op
    /// on the CPU).
    pub fn synchronize(&self) -> crate::Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Gpu(g) => g.synchronize(),
        }
    }

    /// The driver calls made on a GPU so far (None on the CPU).
    pub fn driver_counts(&self) -> Option<crate::gpu::DriverCounts> {
        match self {
            Device::Cpu => None,
            Device::Gpu(g) => Some(g.counts()),
        }
    }

    /// Two handles name the same device when they are both the CPU or share
    /// one GPU context.
    pub fn same(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Gpu(a), Device::Gpu(b)) => a.same(b),
            _ => false,
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Gpu(g) => write!(f, "{}", g.name()),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
