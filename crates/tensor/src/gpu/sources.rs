//! The CUDA kernel sources, embedded at build time: `build.rs` globs
//! `kernels/*.cu` and `kernels/*.cuh` at the workspace root, so a new kernel
//! file is picked up without being registered anywhere. The real-GPU driver
//! (`gpu::cuda`) compiles them with NVRTC; the emulator compiles the same
//! files as host C++.

/// One embedded file of `kernels/`.
#[derive(Clone, Copy, Debug)]
pub struct KernelFile {
    /// The file name, such as `conv2d.cu`.
    pub name: &'static str,
    pub source: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));

impl KernelFile {
    /// The names of the `extern "C" __global__` kernels this file defines,
    /// in source order.
    pub fn kernel_names(&self) -> Vec<&'static str> {
        kernel_names(self.source)
    }
}

/// The `extern "C" __global__ void NAME(` kernels of a source text.
pub fn kernel_names(source: &'static str) -> Vec<&'static str> {
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(pos) = rest.find("__global__") {
        let after = &rest[pos + "__global__".len()..];
        // only definitions marked extern "C" on the same line
        let line_start = rest[..pos].rfind('\n').map_or(0, |p| p + 1);
        let is_extern_c = rest[line_start..pos].contains("extern \"C\"");
        let decl = after.trim_start();
        if is_extern_c {
            if let Some(d) = decl.strip_prefix("void") {
                let d = d.trim_start();
                let end = d.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(d.len());
                if end > 0 {
                    names.push(&d[..end]);
                }
            }
        }
        rest = after;
    }
    names
}

/// The `.cu` file that defines kernel `name`.
pub fn file_defining(name: &str) -> Option<&'static KernelFile> {
    KERNEL_FILES.iter().find(|f| kernel_names(f.source).contains(&name))
}

/// A header by its include name (`common.cuh`).
pub fn header(name: &str) -> Option<&'static KernelFile> {
    KERNEL_HEADERS.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_file_is_embedded_and_names_are_unique() {
        assert!(KERNEL_FILES.iter().any(|f| f.name == "conv2d.cu"));
        assert!(header("common.cuh").is_some() && header("philox.cuh").is_some());
        let mut all: Vec<&str> = KERNEL_FILES.iter().flat_map(|f| f.kernel_names()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a kernel name is defined twice");
        assert_eq!(file_defining("conv2d_fwd_f32").map(|f| f.name), Some("conv2d.cu"));
        assert!(all.iter().all(|k| k.ends_with("_f32")));
    }
}
