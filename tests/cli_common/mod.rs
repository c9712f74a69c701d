//! What the command-line tests share: running the `diffuse` binary from the
//! source tree and asserting success or one clear error line.
#![allow(dead_code)] // each test file uses a subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `diffuse` binary with these arguments, run from the source tree.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_diffuse"));
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

pub fn diffuse(args: &[&str]) -> Output {
    command(args).output().expect("run diffuse")
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let o = diffuse(args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "diffuse {args:?} failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Runs a command that must fail with one `error:` line; returns its stderr.
pub fn fails(args: &[&str]) -> String {
    let o = diffuse(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "diffuse {args:?} should have failed");
    assert!(err.starts_with("error: "), "diffuse {args:?}: expected one clear error line, got:\n{err}");
    assert!(!err.contains("panicked"), "diffuse {args:?} panicked:\n{err}");
    err
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The checkpoint a run wrote at `step`.
pub fn checkpoint(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(format!("ckpt-{step:08}.safetensors"))
}

/// Every f32 tensor of a safetensors file, by name.
pub fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()))
        .collect()
}

/// (loss, gradient norm) of every step a run logged in `metrics.jsonl`.
pub fn logged(run: &Path) -> BTreeMap<u64, (f64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), (v["loss"].as_f64().unwrap(), v["grad_norm"].as_f64().unwrap()))
        })
        .collect()
}
