//! Typed command-line values: `--help` lists the choices of `--device`,
//! `--schedule`, `--target`, `--sampler` and `--variance`, and a wrong value
//! is clap's one-line error naming the flag and the possible values (exit 2,
//! before any work is done).

use std::process::{Command, Output};

fn diffuse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffuse")).args(args).output().expect("run diffuse")
}

fn help(subcommand: &str) -> String {
    let o = diffuse(&[subcommand, "-h"]);
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a command that clap must refuse; returns its stderr.
fn refused(args: &[&str]) -> String {
    let o = diffuse(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "diffuse {args:?}: {err}");
    assert!(err.starts_with("error: "), "diffuse {args:?}: expected one clear error line, got:\n{err}");
    err
}

const DEVICES: &str = "[possible values: auto, cpu, cuda, cuda:N, emu]";

#[test]
fn help_lists_the_possible_values() {
    let train = help("train");
    assert!(train.contains(DEVICES), "{train}");
    assert!(train.contains("[possible values: linear, cosine]"), "{train}");
    assert!(train.contains("[possible values: eps, x0, v]"), "{train}");
    let sample = help("sample");
    assert!(sample.contains(DEVICES), "{sample}");
    assert!(sample.contains("[possible values: ddpm, ddim, dpm++2m, dpm++2m-sde, heun]"), "{sample}");
    assert!(sample.contains("[possible values: uniform, logsnr, karras]"), "{sample}");
    assert!(sample.contains("[possible values: large, small]"), "{sample}");
    for sub in ["eval", "info", "verify-step", "denoise", "inpaint", "img2img"] {
        assert!(help(sub).contains(DEVICES), "{sub}");
    }
    assert!(help("inpaint").contains("[possible values: box, half, strokes]"));
    assert!(help("denoise").contains("[possible values: ddpm, ddim]"));
}

#[test]
fn wrong_values_are_clap_errors_naming_the_flag() {
    let err = refused(&["train", "--device", "gpu"]);
    assert!(err.contains("invalid value 'gpu' for '--device <DEVICE>'") && err.contains(DEVICES), "{err}");
    let err = refused(&["sample", "--checkpoint", "x", "--device", "cuda:one"]);
    assert!(err.contains("'cuda:one'") && err.contains(DEVICES), "{err}");
    let err = refused(&["train", "--device", "cuda:N"]);
    assert!(err.contains("cuda:0"), "{err}");
    let err = refused(&["train", "--schedule", "quadratic"]);
    assert!(err.contains("'--schedule <SCHEDULE>'") && err.contains("linear, cosine"), "{err}");
    let err = refused(&["train", "--target", "x1"]);
    assert!(err.contains("'--target <TARGET>'") && err.contains("eps, x0, v"), "{err}");
}

#[test]
fn cuda_with_an_ordinal_parses() {
    // No GPU here (or a GPU with no device 99): the value is accepted by the
    // parser and the error comes from opening the device, exit 1.
    let o = diffuse(&["info", "--device", "cuda:99"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: ") && !err.contains("invalid value"), "{err}");
    let o = diffuse(&["info", "--device", "cpu"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("device cpu: cpu ready"));
}
