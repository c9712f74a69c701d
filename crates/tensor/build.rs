//! Embeds the CUDA kernel sources and generates a typed handle for every
//! kernel:
//! - `$OUT_DIR/kernel_sources.rs` (included by `src/gpu/sources.rs`): every
//!   `kernels/*.cu` (compiled by NVRTC at run time) and every `kernels/*.cuh`
//!   (handed to NVRTC as include headers);
//! - `$OUT_DIR/kernel_handles.rs` (included by `src/gpu/kernels.rs`): one
//!   module per `.cu` file, one `Kernel` static per `extern "C" __global__`
//!   kernel with its parameters' names and kinds, as scanned by
//!   `diffuse-kernel-scan` (the scanner the emulator's build uses too).
//!
//! Files are globbed, so a new kernel file needs no registration; a kernel
//! is launched through its handle, so a renamed or removed kernel is a
//! compile error in the launch code, not a run-time "unknown kernel".

use diffuse_kernel_scan::{scan_source, Kernel};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let kernels = manifest.join("../../kernels");
    // A directory: cargo rescans it, so added, removed or edited files rerun this.
    println!("cargo:rerun-if-changed={}", kernels.display());
    let mut files: Vec<PathBuf> = match fs::read_dir(&kernels) {
        Ok(dir) => dir.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let with_ext = |ext: &str| -> Vec<(String, PathBuf)> {
        files
            .iter()
            .filter(|f| f.extension().and_then(|e| e.to_str()) == Some(ext))
            .map(|f| {
                let name = f.file_name().and_then(|n| n.to_str()).expect("kernel file names are UTF-8").to_string();
                let abs = fs::canonicalize(f).unwrap_or_else(|_| f.clone());
                println!("cargo:rerun-if-changed={}", abs.display());
                (name, abs)
            })
            .collect()
    };
    let (cu, cuh) = (with_ext("cu"), with_ext("cuh"));

    let table = |list: &[(String, PathBuf)]| -> String {
        list.iter()
            .map(|(name, abs)| {
                format!("    KernelFile {{ name: {name:?}, source: include_str!({:?}) }},\n", abs.display().to_string())
            })
            .collect()
    };
    let sources = format!(
        "/// Every `kernels/*.cu`, sorted by name.\npub static KERNEL_FILES: &[KernelFile] = &[\n{}];\n\
         /// Every `kernels/*.cuh`, the headers the `.cu` files may include.\npub static KERNEL_HEADERS: &[KernelFile] = &[\n{}];\n",
        table(&cu),
        table(&cuh)
    );
    write(&out_dir().join("kernel_sources.rs"), &sources);

    let mut handles = String::new();
    let mut all = Vec::new();
    for (name, abs) in &cu {
        let text = fs::read_to_string(abs).unwrap_or_else(|e| panic!("reading {}: {e}", abs.display()));
        let scanned = scan_source(&text);
        for w in &scanned.warnings {
            println!("cargo:warning=kernels/{name}: {w}");
        }
        let module = name.trim_end_matches(".cu");
        let _ = writeln!(
            handles,
            "/// The kernels of `kernels/{name}`.\npub mod {module} {{\n    use super::{{ArgKind, Kernel, Param}};"
        );
        for k in &scanned.kernels {
            let _ = writeln!(handles, "{}", handle(name, k));
            all.push(format!("&{module}::{}", k.name.to_uppercase()));
        }
        handles.push_str("}\n");
    }
    let _ = writeln!(
        handles,
        "/// Every kernel of `kernels/*.cu`, file by file in source order.\npub static ALL: &[&Kernel] = &[{}];",
        all.join(", ")
    );
    write(&out_dir().join("kernel_handles.rs"), &handles);
}

/// `pub static NAME_F32: Kernel = Kernel { .. };` for one scanned kernel.
fn handle(file: &str, k: &Kernel) -> String {
    let params: Vec<String> = k
        .param_names
        .iter()
        .zip(&k.param_kinds)
        .map(|(n, kind)| format!("Param {{ name: {n:?}, kind: ArgKind::{} }}", kind.variant()))
        .collect();
    format!(
        "    /// `{}({})`\n    pub static {}: Kernel = Kernel {{ name: {:?}, file: {file:?}, params: &[{}] }};",
        k.name,
        k.params,
        k.name.to_uppercase(),
        k.name,
        params.join(", ")
    )
}

fn out_dir() -> PathBuf {
    PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
}

fn write(path: &Path, text: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}
