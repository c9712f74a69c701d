//! What the command-line tests share: running the `diffuse` binary from the
//! source tree and asserting success or one clear error line.
#![allow(dead_code)] // each test file uses a subset

use std::path::Path;
use std::process::{Command, Output};

pub fn diffuse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run diffuse")
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
