//! Builds the CUDA emulator's shared object: the fiber runtime
//! (src/runtime.cc) plus every kernel of the workspace (kernels/*.cu) and
//! the emulator's own test kernels (tests/kernels/*.cu), each compiled as
//! host C++ with the shim header force-included.
//!
//! For each kernel file it scans (with `diffuse-kernel-scan`, the scanner
//! the tensor crate's typed kernel handles come from too) the
//! `extern "C" __global__ void NAME(...)` signatures and the
//! `extern __shared__` names, and generates
//! - a wrapper that includes the file inside its own namespace (files are
//!   separate modules on a GPU: same-named helpers must not collide) and a
//!   table {name, file, params, n_args, arg sizes, arg kinds, arg names,
//!   entry(void** args)} whose sizes and kinds are deduced by templates from
//!   the real C++ signature (a static_assert cross-checks the scan);
//! - one registry file: the master table, the per-OS-thread dynamic shared
//!   memory buffer and an alias of it for every `extern __shared__` name.
//!
//! A kernel file that does not compile under the shim fails the build with
//! the compiler's errors and the file's name.

use diffuse_kernel_scan::{scan_source, Kernel};
use std::collections::{BTreeSet, HashMap};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const DYN_SMEM_BYTES: usize = 227 * 1024;
const PAGE: usize = 4096;

struct KernelFile {
    path: PathBuf,
    display: String,
    kernels: Vec<Kernel>,
    static_shared: bool,
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let workspace = manifest.join("../..");
    let kernels_dir = workspace.join("kernels");
    let test_kernels_dir = manifest.join("tests/kernels");
    let shim_dir = manifest.join("shim");
    let src_dir = manifest.join("src");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CXX");
    println!("cargo:rerun-if-env-changed=DIFFUSE_EMU_CXXFLAGS");
    println!("cargo:rerun-if-env-changed=DIFFUSE_EMU_INSTRUMENT");
    for d in [&kernels_dir, &test_kernels_dir, &shim_dir, &shim_dir.join("include"), &src_dir] {
        println!("cargo:rerun-if-changed={}", d.display());
        for f in list(d, &["cu", "cuh", "h", "cc"]) {
            println!("cargo:rerun-if-changed={}", f.display());
        }
    }

    // ---- scan
    let mut files = Vec::new();
    let mut shared_names = BTreeSet::new();
    for (dir, prefix) in [(&kernels_dir, "kernels"), (&test_kernels_dir, "crates/emu/tests/kernels")] {
        let first = files.len();
        let mut header_static_shared = false;
        for f in list(dir, &["cu", "cuh"]) {
            let text = fs::read_to_string(&f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
            let scanned = scan_source(&text);
            for w in &scanned.warnings {
                println!("cargo:warning=CUDA emulator: {}: {w}", f.display());
            }
            shared_names.extend(scanned.extern_shared);
            let static_shared = scanned.static_shared;
            if f.extension().is_some_and(|e| e == "cu") {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                files.push(KernelFile {
                    kernels: scanned.kernels,
                    display: format!("{prefix}/{name}"),
                    path: f,
                    static_shared,
                });
            } else {
                header_static_shared |= static_shared;
            }
        }
        // A header with static shared memory may be included by any file.
        for f in &mut files[first..] {
            f.static_shared |= header_static_shared;
        }
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    for f in &files {
        for k in &f.kernels {
            if let Some(other) = seen.insert(k.name.clone(), f.display.clone()) {
                panic!("CUDA emulator: kernel `{}` is defined in both {} and {}", k.name, other, f.display);
            }
        }
    }

    // ---- generate
    let gen_dir = out.join("gen");
    fs::create_dir_all(&gen_dir).unwrap();
    let mut wrappers = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let path = gen_dir.join(format!("emu_k{i}.cc"));
        write_if_changed(&path, &wrapper_source(i, f));
        wrappers.push((path, f.display.clone()));
    }
    let registry = gen_dir.join("emu_registry.cc");
    write_if_changed(&registry, &registry_source(&files, &shared_names));

    // ---- compile
    let base = |extra: &[&str]| {
        let mut b = cc::Build::new();
        b.cpp(true)
            .std("c++17")
            .opt_level(2)
            .debug(false)
            .pic(true)
            .warnings(false)
            .extra_warnings(false)
            .cargo_metadata(false)
            .flag("-ffp-contract=off")
            .flag("-fno-strict-aliasing")
            .flag("-Wno-unknown-pragmas")
            .flag("-Wno-attributes");
        if let Ok(f) = env::var("DIFFUSE_EMU_CXXFLAGS") {
            for x in f.split_whitespace() {
                b.flag(x);
            }
        }
        for x in extra {
            b.flag(x);
        }
        b.get_compiler()
    };
    let shim_h = shim_dir.join("shim.h");
    let inc = |p: &Path| format!("-I{}", p.display());
    let mut kernel_flags: Vec<String> = vec![
        "-fvisibility=hidden".into(),
        "-fstack-clash-protection".into(),
        "-include".into(),
        shim_h.display().to_string(),
        inc(&shim_dir),
        inc(&shim_dir.join("include")),
        inc(&kernels_dir),
        inc(&src_dir),
    ];
    kernel_flags.extend(hazard_instrumentation_flags().iter().map(|f| f.to_string()));
    let kernel_flags: Vec<&str> = kernel_flags.iter().map(String::as_str).collect();
    let kernel_tool = base(&kernel_flags);
    let source_root = format!("-DEMU_SOURCE_ROOT={}", c_str(&workspace.canonicalize().unwrap().display().to_string()));
    let runtime_tool = base(&["-fvisibility=hidden", &inc(&shim_dir), &inc(&src_dir), &source_root]);

    // Objects are cached by a hash of everything that goes into them.
    let mut common_hash = std::collections::hash_map::DefaultHasher::new();
    for d in [&kernels_dir, &test_kernels_dir, &shim_dir, &shim_dir.join("include"), &src_dir] {
        for f in list(d, &["cuh", "h"]) {
            f.hash(&mut common_hash);
            fs::read(&f).unwrap_or_default().hash(&mut common_hash);
        }
    }
    let mut jobs = Vec::new();
    let obj_dir = out.join("obj");
    fs::create_dir_all(&obj_dir).unwrap();
    let mut add_job = |tool: &cc::Tool, src: &Path, what: String, deps: &[&Path]| {
        let mut h = common_hash.clone();
        format!("{:?} {:?}", tool.path(), tool.args()).hash(&mut h);
        fs::read(src).unwrap().hash(&mut h);
        for d in deps {
            fs::read(d).unwrap_or_default().hash(&mut h);
        }
        let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
        let obj = obj_dir.join(format!("{stem}-{:016x}.o", h.finish()));
        jobs.push((tool.clone(), src.to_path_buf(), obj, what));
    };
    for ((w, display), f) in wrappers.iter().zip(&files) {
        add_job(&kernel_tool, w, display.clone(), &[&f.path]);
    }
    add_job(&runtime_tool, &registry, "generated registry".into(), &[]);
    add_job(&runtime_tool, &src_dir.join("runtime.cc"), "crates/emu/src/runtime.cc".into(), &[]);
    let objs: Vec<PathBuf> = jobs.iter().map(|j| j.2.clone()).collect();
    compile_all(jobs);

    // ---- link
    let so = out.join("libdiffuse_emu.so");
    let mut cmd = runtime_tool.to_command();
    cmd.arg("-shared").arg("-o").arg(&so).args(&objs).args([
        "-Wl,-Bsymbolic",
        "-Wl,-z,defs",
        "-Wl,-z,noexecstack",
        "-lm",
        "-lpthread",
        "-ldl",
    ]);
    let o = cmd.output().expect("running the C++ compiler to link the emulator");
    if !o.status.success() {
        panic!(
            "CUDA emulator: linking {} failed:\n{}{}",
            so.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    println!("cargo:rustc-env=DIFFUSE_EMU_SO={}", so.display());
    let names: Vec<&str> = files.iter().map(|f| f.display.as_str()).collect();
    println!("cargo:rustc-env=DIFFUSE_EMU_KERNEL_FILES={}", names.join(","));
}

/// Flags that make every memory access of kernel code call the hazard
/// detector's hooks (`__tsan_read4`, ...; defined in src/race_check.h, no TSan
/// runtime is linked) and keep line tables for its reports.
/// `DIFFUSE_EMU_INSTRUMENT=0` at build time leaves them out (to measure the
/// detector's cost; its checks then see nothing).
fn hazard_instrumentation_flags() -> Vec<&'static str> {
    if env::var("DIFFUSE_EMU_INSTRUMENT").is_ok_and(|v| v.trim() == "0") {
        return Vec::new();
    }
    vec![
        "-fsanitize=thread",
        "--param=tsan-instrument-func-entry-exit=0",
        "--param=tsan-distinguish-volatile=1",
        "-g1",
        "-Wno-tsan",
    ]
}

fn list(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| exts.iter().any(|x| e == *x)))
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn write_if_changed(path: &Path, text: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::write(path, text).unwrap();
    }
}

fn compile_all(jobs: Vec<(cc::Tool, PathBuf, PathBuf, String)>) {
    let n = env::var("NUM_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(2usize).max(1);
    let queue = Arc::new(Mutex::new(jobs));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let queue = queue.clone();
            let failures = failures.clone();
            std::thread::spawn(move || loop {
                let job = queue.lock().unwrap().pop();
                let Some((tool, src, obj, what)) = job else {
                    break;
                };
                if obj.exists() {
                    continue;
                }
                let tmp = obj.with_extension("o.tmp");
                let mut cmd = tool.to_command();
                cmd.arg("-c").arg(&src).arg("-o").arg(&tmp);
                match cmd.output() {
                    Ok(o) if o.status.success() => {
                        fs::rename(&tmp, &obj).unwrap();
                    }
                    Ok(o) => failures.lock().unwrap().push(format!(
                        "{what} does not compile under the CUDA emulator's shim ({}):\n{}{}",
                        src.display(),
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )),
                    Err(e) => failures.lock().unwrap().push(format!("{what}: cannot run {:?}: {e}", tool.path())),
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let f = failures.lock().unwrap();
    if !f.is_empty() {
        for msg in f.iter() {
            for line in msg.lines().take(60) {
                println!("cargo:warning={line}");
            }
        }
        panic!("CUDA emulator: {} file(s) failed to compile:\n\n{}", f.len(), f.join("\n\n"));
    }
}

// ------------------------------------------------------------------ generation

fn c_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' | '\r' | '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn wrapper_source(i: usize, f: &KernelFile) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "// Generated by crates/emu/build.rs from {} -- do not edit.", f.display);
    s.push_str("#include \"emu_registry_support.h\"\n");
    let _ = writeln!(s, "namespace emu_file_{i} {{");
    let _ = writeln!(s, "#include {}", c_str(&f.path.display().to_string()));
    s.push_str("}\n");
    for (k_i, k) in f.kernels.iter().enumerate() {
        let names: Vec<String> = k.param_names.iter().map(|n| c_str(n)).collect();
        let _ = writeln!(
            s,
            "static const char* const emu_names_{k_i}[] = {{{}}};",
            if names.is_empty() { "nullptr".to_string() } else { names.join(", ") }
        );
        let _ = writeln!(
            s,
            "static_assert(EmuSig<decltype(emu_file_{i}::{n})>::n == {c}, \"crates/emu/build.rs scanned {c} parameters of {n}\");",
            n = k.name,
            c = k.param_names.len()
        );
    }
    let _ = writeln!(
        s,
        "extern \"C\" __attribute__((visibility(\"hidden\"))) const EmuKernelDesc emu_kernels_file_{i}[] = {{"
    );
    for (k_i, k) in f.kernels.iter().enumerate() {
        let sig = format!("EmuSig<decltype(emu_file_{i}::{})>", k.name);
        let _ = writeln!(
            s,
            "    {{{}, {}, {}, {sig}::n, {sig}::sizes + 1, {sig}::kinds + 1, emu_names_{k_i}, &emu_entry<&emu_file_{i}::{}>, {}u, 0u}},",
            c_str(&k.name),
            c_str(&f.display),
            c_str(&k.params),
            k.name,
            f.static_shared as u32
        );
    }
    if f.kernels.is_empty() {
        s.push_str("    {nullptr, nullptr, nullptr, 0, nullptr, nullptr, nullptr, nullptr, 0u, 0u},\n");
    }
    s.push_str("};\n");
    s
}

fn registry_source(files: &[KernelFile], shared: &BTreeSet<String>) -> String {
    let dyn_bytes = DYN_SMEM_BYTES.div_ceil(PAGE) * PAGE;
    let mut s = String::new();
    s.push_str("// Generated by crates/emu/build.rs -- do not edit.\n#include \"emu_api.h\"\n#include <stdint.h>\n");
    let _ = writeln!(s, "#define EMU_DYN_BYTES {dyn_bytes}u");
    s.push_str(
        "// One dynamic shared memory buffer per OS thread, plus a guard page. It lives in\n\
         // .tdata so that .tbss holds nothing but the kernels' static __shared__ variables.\n\
         extern \"C\" {\n\
         __attribute__((section(\".tdata.emu_dynamic_smem\"), aligned(4096), visibility(\"hidden\")))\n\
         thread_local unsigned char emu_dynamic_smem[EMU_DYN_BYTES + 4096];\n\
         __attribute__((visibility(\"hidden\"))) extern const uint32_t emu_dynamic_smem_bytes = EMU_DYN_BYTES;\n",
    );
    for n in shared {
        let _ = writeln!(
            s,
            "extern thread_local unsigned char {n}[EMU_DYN_BYTES] __attribute__((alias(\"emu_dynamic_smem\"), visibility(\"hidden\")));"
        );
    }
    s.push_str("}\n");
    for i in 0..files.len() {
        let _ = write!(s, "namespace emu_file_{i} {{");
        for n in shared {
            let _ = write!(
                s,
                " extern thread_local unsigned char {n}[EMU_DYN_BYTES] __attribute__((alias(\"emu_dynamic_smem\"), visibility(\"hidden\")));"
            );
        }
        s.push_str(" }\n");
    }
    for (i, f) in files.iter().enumerate() {
        let _ = writeln!(s, "extern \"C\" const EmuKernelDesc emu_kernels_file_{i}[{}];", f.kernels.len().max(1));
    }
    let total: usize = files.iter().map(|f| f.kernels.len()).sum();
    s.push_str("extern \"C\" __attribute__((visibility(\"hidden\"))) const EmuKernelDesc emu_kernel_table[] = {\n");
    for (i, f) in files.iter().enumerate() {
        for k in 0..f.kernels.len() {
            let _ = writeln!(s, "    emu_kernels_file_{i}[{k}],");
        }
    }
    if total == 0 {
        s.push_str("    {nullptr, nullptr, nullptr, 0, nullptr, nullptr, nullptr, nullptr, 0u, 0u},\n");
    }
    s.push_str("};\n");
    let _ = writeln!(
        s,
        "extern \"C\" {{ __attribute__((visibility(\"hidden\"))) extern const uint32_t emu_kernel_table_len = {total}; }}"
    );
    s
}
