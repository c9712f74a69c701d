//! Embeds the CUDA kernel sources: every `kernels/*.cu` (compiled by NVRTC at
//! run time) and every `kernels/*.cuh` (handed to NVRTC as include headers)
//! at the workspace root, globbed here so a new kernel file needs no
//! registration. Writes `$OUT_DIR/kernel_sources.rs`, included by
//! `src/gpu/sources.rs`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let kernels = manifest.join("../../kernels");
    // A directory: cargo rescans it, so added, removed or edited files rerun this.
    println!("cargo:rerun-if-changed={}", kernels.display());
    let mut files: Vec<PathBuf> = match fs::read_dir(&kernels) {
        Ok(dir) => dir.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let list = |ext: &str| -> String {
        let mut s = String::new();
        for f in files.iter().filter(|f| f.extension().and_then(|e| e.to_str()) == Some(ext)) {
            let name = f.file_name().unwrap().to_str().expect("kernel file names are UTF-8");
            let abs = fs::canonicalize(f).unwrap_or_else(|_| f.clone());
            println!("cargo:rerun-if-changed={}", abs.display());
            s.push_str(&format!(
                "    KernelFile {{ name: {name:?}, source: include_str!({:?}) }},\n",
                abs.display().to_string()
            ));
        }
        s
    };
    let out = format!(
        "/// Every `kernels/*.cu`, sorted by name.\npub static KERNEL_FILES: &[KernelFile] = &[\n{}];\n\
         /// Every `kernels/*.cuh`, the headers the `.cu` files may include.\npub static KERNEL_HEADERS: &[KernelFile] = &[\n{}];\n",
        list("cu"),
        list("cuh")
    );
    let dest = Path::new(&env::var("OUT_DIR").unwrap()).join("kernel_sources.rs");
    fs::write(dest, out).unwrap();
}
