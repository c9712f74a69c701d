//! The CUDA kernel sources, embedded at build time: `build.rs` globs
//! `kernels/*.cu` and `kernels/*.cuh` at the workspace root, so a new kernel
//! file is picked up without being registered anywhere. The real-GPU driver
//! (`gpu::cuda`) compiles them with NVRTC; the emulator compiles the same
//! files as host C++. Which kernels a file defines comes from the typed
//! handles in `gpu::kernels`.

/// One embedded file of `kernels/`.
#[derive(Clone, Copy, Debug)]
pub struct KernelFile {
    /// The file name, such as `conv2d.cu`.
    pub name: &'static str,
    pub source: &'static str,
}

use super::kernels::{self, Kernel};

include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));

impl KernelFile {
    /// The handles of the kernels this file defines, in source order.
    pub fn kernels(&self) -> impl Iterator<Item = &'static Kernel> + '_ {
        kernels::ALL.iter().copied().filter(move |k| k.file == self.name)
    }
}

/// The embedded `.cu` file that defines `kernel`.
pub fn file_of(kernel: &Kernel) -> Option<&'static KernelFile> {
    KERNEL_FILES.iter().find(|f| f.name == kernel.file)
}

/// A header by its include name (`common.cuh`).
pub fn header(name: &str) -> Option<&'static KernelFile> {
    KERNEL_HEADERS.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_file_is_embedded_with_its_kernels() {
        assert!(KERNEL_FILES.iter().any(|f| f.name == "conv2d.cu"));
        assert!(header("common.cuh").is_some() && header("philox.cuh").is_some());
        for f in KERNEL_FILES {
            assert!(f.kernels().count() > 0, "{} defines no kernel", f.name);
        }
        assert_eq!(file_of(&kernels::conv2d::CONV2D_FWD_F32).map(|f| f.name), Some("conv2d.cu"));
    }
}
