//! Bounded memory at the command line: absurd config sizes, configs past the
//! memory budget and `sample --n` past memory each give one `error:` line
//! saying what they need (and the limit), never an allocator abort; `info`
//! counts any config without building it.

use std::path::Path;
use std::process::{Command, Output};

fn diffuse(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_diffuse"));
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("DIFFUSE_MEMORY_LIMIT");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run diffuse")
}

fn ok(args: &[&str]) -> String {
    let o = diffuse(args, &[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "diffuse {args:?} failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// A command that must fail with exit code 1 and one `error:` line; returns it.
fn fails_with(args: &[&str], env: &[(&str, &str)], needle: &str) -> String {
    let o = diffuse(args, env);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "diffuse {args:?}: expected exit 1 (not an abort), stderr:\n{err}");
    assert!(err.starts_with("error: ") && err.lines().count() == 1, "diffuse {args:?}: not one error line:\n{err}");
    assert!(err.contains(needle), "diffuse {args:?}: {err:?} does not mention {needle:?}");
    err
}

/// The mnist preset with one field changed, written as a JSON config.
fn config(dir: &Path, name: &str, field: &str, value: serde_json::Value) -> String {
    let mut c = serde_json::json!({
        "in_ch": 1, "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 2,
        "attn_resolutions": [7], "dropout": 0.1, "groups": 8, "image_size": 28
    });
    c[field] = value;
    if field == "image_size" {
        c["attn_resolutions"] = serde_json::json!([]);
    }
    let p = dir.join(name);
    std::fs::write(&p, c.to_string()).unwrap();
    p.display().to_string()
}

#[test]
fn absurd_config_sizes_are_refused_by_info_and_train() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run").display().to_string();
    for (field, value, msg) in [
        ("ch", 100_000, "ch 100000 is above the limit of 8192"),
        ("image_size", 100_000, "image_size 100000 is above the limit of 4096"),
        ("num_res_blocks", 100_000, "num_res_blocks 100000 is above the limit of 16"),
    ] {
        let cfg = config(d.path(), &format!("{field}.json"), field, value.into());
        fails_with(&["info", "--config", &cfg], &[], msg);
        fails_with(&["train", "--config", &cfg, "--device", "cpu", "--out", &out, "--steps", "1"], &[], msg);
    }
    let args = ["train", "--config", "tiny-mnist", "--device", "cpu", "--out", &out, "--timesteps", "100000000000"];
    fails_with(&args, &[], "100000000000 diffusion timesteps is above the limit of 100000");
    assert!(!d.path().join("run").exists());
}

#[test]
fn info_counts_the_largest_allowed_model_without_building_it() {
    let d = tempfile::tempdir().unwrap();
    let cfg = serde_json::json!({
        "in_ch": 16, "ch": 8192, "ch_mult": [1, 1, 1, 1, 1, 1, 1, 1], "num_res_blocks": 16,
        "attn_resolutions": [], "dropout": 0.0, "groups": 32, "image_size": 4096
    });
    let p = d.path().join("max.json");
    std::fs::write(&p, cfg.to_string()).unwrap();
    let out = ok(&["info", "--config", &p.display().to_string()]);
    let params: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("parameters: "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no parameter count in:\n{out}"));
    assert!(params > 100_000_000_000, "{params}");
    assert!(out.contains("memory limit: "), "{out}");
    // The presets print their known counts and a memory estimate.
    let out = ok(&["info", "--config", "cifar10"]);
    assert!(out.contains("parameters: 35746307") && out.contains("weights: 136.4 MiB"), "{out}");
}

#[test]
fn training_past_the_memory_limit_is_refused_before_the_run_starts() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let out = run.display().to_string();
    let args = ["train", "--config", "mnist", "--device", "cpu", "--out", &out, "--steps", "1"];
    let err = fails_with(&args, &[("DIFFUSE_MEMORY_LIMIT", "64M")], "training this model needs");
    assert!(err.contains("more than the memory limit of 64.0 MiB (set by DIFFUSE_MEMORY_LIMIT)"), "{err}");
    assert!(err.contains("activations (batch 64)"), "{err}");
    let mut flag = vec!["--memory-limit", "64M"];
    flag.extend_from_slice(&args);
    fails_with(&flag, &[], "more than the memory limit of 64.0 MiB (set by --memory-limit)");
    assert!(!run.exists(), "the run directory was created");
    fails_with(&args, &[("DIFFUSE_MEMORY_LIMIT", "lots")], "DIFFUSE_MEMORY_LIMIT=\"lots\" is not a size");
}

#[test]
fn sampling_more_images_than_memory_holds_is_refused_and_batches_work() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run").display().to_string();
    ok(&[
        "train",
        "--config",
        "tiny-mnist",
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--sample-every",
        "0",
        "--steps",
        "1",
        "--checkpoint-every",
        "1",
        "--out",
        &run,
    ]);
    let png = d.path().join("s.png").display().to_string();
    let args = ["sample", "--checkpoint", &run, "--device", "cpu", "--out", &png, "--steps", "2"];
    let mut big = args.to_vec();
    big.extend_from_slice(&["--n", "100000000"]);
    let err = fails_with(&big, &[], "sampling 100000000 images needs");
    assert!(err.contains("100000000 images and their copies") && err.contains("more than the memory limit"), "{err}");
    let mut small = args.to_vec();
    small.extend_from_slice(&["--n", "3", "--batch-size", "2"]);
    ok(&small);
    assert!(Path::new(&png).is_file());
}
