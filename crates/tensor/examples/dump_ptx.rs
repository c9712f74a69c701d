//! Writes the NVRTC PTX of every `kernels/*.cu` into a folder, for
//! `scripts/check-kernels.sh` (ptxas register / shared memory / spill report).
//!
//! cargo run -p diffuse-tensor --example dump_ptx -- OUT_DIR [compute_90]

use diffuse_tensor::gpu::cuda::{nvrtc_compile, NvrtcTarget};
use diffuse_tensor::gpu::sources::KERNEL_FILES;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: dump_ptx OUT_DIR [compute_XX]");
        return ExitCode::from(2);
    };
    let arch: &'static str = Box::leak(args.next().unwrap_or_else(|| "compute_90".into()).into_boxed_str());
    std::fs::create_dir_all(&dir).expect("creating the output folder");
    let mut ok = true;
    for file in KERNEL_FILES {
        match nvrtc_compile(file, NvrtcTarget::Ptx(arch)) {
            Ok(mut ptx) => {
                while ptx.last() == Some(&0) {
                    ptx.pop();
                }
                let path = format!("{dir}/{}.ptx", file.name.trim_end_matches(".cu"));
                std::fs::write(&path, ptx).expect("writing PTX");
                println!("{path}");
            }
            Err(e) => {
                eprintln!("{e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
