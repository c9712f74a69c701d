//! Data-parallel training on emulated devices (`--device emu --gpus 0,1`):
//! 2 and 4 ranks follow the 1-device run with the same global batch within
//! float32 rounding (the all-reduce sums the ranks' gradients in another
//! order than one device sums the batch), repeat bit for bit, resume bit
//! for bit with the same ranks, and one failing rank stops every rank with
//! its own error within seconds.
//!
//! The data is a folder of 8x8 images in two classes, the model conditional
//! with class dropout 0.5 and dropout 0.1, so that every per-sample draw
//! (data order, noise, timesteps, dropout masks, class dropout) is sharded.

mod cli_common;
use cli_common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LR: f64 = 1e-3;
const SMALL: &str = r#"{"in_ch":1,"ch":8,"ch_mult":[1,2],"num_res_blocks":1,"attn_resolutions":[4],"dropout":0.1,"groups":4,"image_size":8}"#;

/// 12 grey 8x8 images in classes a and b, and the model config.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    for (k, class) in ["a", "b"].iter().enumerate() {
        let d = data.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..6u32 {
            let img = image::GrayImage::from_fn(8, 8, |x, y| {
                image::Luma([((x * 37 + y * 11 + i * 53 + k as u32 * 97) % 256) as u8])
            });
            img.save(d.join(format!("{i}.png"))).unwrap();
        }
    }
    let config = dir.join("small.json");
    std::fs::write(&config, SMALL).unwrap();
    (data, config)
}

fn train(data: &Path, config: &Path, out: &Path, gpus: Option<&str>, steps: u64) -> String {
    let (data, config, out, steps) = (s(data), s(config), s(out), steps.to_string());
    let mut args = vec!["train", "--config", &config, "--data", &data, "--out", &out, "--steps", &steps];
    args.extend_from_slice(&["--device", "emu", "--batch-size", "4", "--sample-every", "0", "--log-every", "1"]);
    args.extend_from_slice(&["--checkpoint-every", "2", "--seed", "5", "--conditional", "--class-dropout", "0.5"]);
    args.extend_from_slice(&["--lr", "1e-3", "--warmup", "0"]);
    if let Some(g) = gpus {
        args.extend_from_slice(&["--gpus", g]);
    }
    ok(&args)
}

fn same_bits(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert!(ta.len() > 50 && ta.keys().eq(tb.keys()));
    for (name, x) in &ta {
        assert!(x.iter().zip(&tb[name]).all(|(p, q)| p.to_bits() == q.to_bits()), "{name}: {a:?} vs {b:?}");
    }
}

/// The largest absolute difference of the raw weights (not the EMA or the
/// moments), and the tensor's name.
fn weight_difference(a: &Path, b: &Path) -> (f64, String) {
    let (ta, tb) = (tensors(a), tensors(b));
    let mut worst = (0.0f64, String::new());
    for (name, x) in ta.iter().filter(|(n, _)| n.starts_with("model.")) {
        let diff = x.iter().zip(&tb[name]).fold(0.0f64, |m, (p, q)| m.max((*p as f64 - *q as f64).abs()));
        if diff > worst.0 {
            worst = (diff, name.clone());
        }
    }
    worst
}

#[test]
fn two_and_four_emulated_devices_match_one_device_and_repeat_bit_identical_emu() {
    let d = tempfile::tempdir().unwrap();
    let (data, config) = fixture(d.path());
    let run = |name: &str, gpus: Option<&str>| {
        let out = d.path().join(name);
        train(&data, &config, &out, gpus, 2);
        out
    };
    let one = run("one", None);
    let two = run("two", Some("0,1"));
    let two_again = run("two-again", Some("0,1"));
    let four = run("four", Some("0,1,2,3"));
    same_bits(&checkpoint(&two, 2), &checkpoint(&two_again, 2));

    let l1 = logged(&one);
    assert_eq!(l1.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    for (name, run) in [("2 ranks", &two), ("4 ranks", &four)] {
        let l = logged(run);
        assert_eq!(l.keys().copied().collect::<Vec<_>>(), vec![1, 2], "{name}");
        for step in [1, 2] {
            let ((loss1, g1), (loss, g)) = (l1[&step], l[&step]);
            let (dl, dg) = ((loss - loss1).abs() / loss1.abs(), (g - g1).abs() / g1.abs());
            eprintln!("{name} vs 1 device, step {step}: loss {dl:.2e}, gradient norm {dg:.2e} (relative)");
            // f32 sums in another order: a few ulp of each partial sum
            assert!(dl <= 1e-5 && dg <= 1e-5, "{name} step {step}: loss {loss} vs {loss1}, |g| {g} vs {g1}");
        }
        // AdamW moves each weight by about lr a step whatever the gradient's
        // size, so a rounding difference of a gradient element that is
        // itself near zero (a sum that cancels) moves that weight by a
        // fraction of lr: the bound is 1% of one step per step.
        let (w, worst) = weight_difference(&checkpoint(&one, 2), &checkpoint(run, 2));
        eprintln!("{name} vs 1 device: largest weight difference after 2 steps {:.2e} lr ({worst})", w / LR);
        assert!(w <= 0.01 * LR * 2.0, "{name}: {worst} differs by {w:.2e} = {:.2e} lr", w / LR);
    }
}

#[test]
fn data_parallel_resume_is_bit_identical_emu() {
    let d = tempfile::tempdir().unwrap();
    let (data, config) = fixture(d.path());
    let (straight, split) = (d.path().join("straight"), d.path().join("split"));
    train(&data, &config, &straight, Some("0,1"), 3);
    train(&data, &config, &split, Some("0,1"), 2);
    let split_s = s(&split);
    ok(&["train", "--resume", &split_s, "--steps", "3", "--device", "emu", "--gpus", "0,1"]);
    same_bits(&checkpoint(&straight, 3), &checkpoint(&split, 3));
    let (a, b) = (logged(&straight), logged(&split));
    assert_eq!(a.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    for step in [1, 2, 3] {
        assert_eq!(a[&step].0.to_bits(), b[&step].0.to_bits(), "step {step}");
    }
}

#[test]
fn a_failing_rank_stops_every_rank_with_its_error_emu() {
    let d = tempfile::tempdir().unwrap();
    let (data, config) = fixture(d.path());
    let out = s(&d.path().join("run"));
    let (data, config) = (s(&data), s(&config));
    let start = Instant::now();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(["train", "--config", &config, "--data", &data, "--out", &out, "--steps", "5", "--device", "emu"])
        .args(["--gpus", "0,1,2", "--batch-size", "3", "--sample-every", "0", "--seed", "5"])
        .env("DIFFUSE_TEST_RANK_FAIL", "1@2")
        .env("DIFFUSE_COMM_TIMEOUT_S", "120")
        .output()
        .expect("run diffuse");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.starts_with("error: ") && err.trim_end().lines().count() == 1, "one error line:\n{err}");
    assert!(err.contains("rank 1") && err.contains("step 2"), "{err}");
    assert_eq!(err.matches("injected failure").count(), 1, "said once: {err}");
    // the others stopped through the abort, far before the 120 s timeout
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
}

#[test]
fn gpus_that_cannot_work_are_one_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let (data, config) = fixture(d.path());
    let (data, config, out) = (s(&data), s(&config), s(&d.path().join("run")));
    let base = ["train", "--config", &config, "--data", &data, "--out", &out, "--steps", "1"];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter().map(|x| x.to_string()).chain(extra.iter().map(|x| x.to_string())).collect()
    };
    let fails = |args: Vec<String>| fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // uneven split
    let e = fails(with(&["--device", "emu", "--gpus", "0,1,2", "--batch-size", "4"]));
    assert!(e.contains("does not split evenly over 3"), "{e}");
    // several CUDA GPUs without a driver / NCCL
    let e = fails(with(&["--gpus", "0,1"]));
    assert!(e.contains("NCCL") || e.contains("libcuda"), "{e}");
    let e = fails(with(&["--device", "cpu", "--gpus", "0,1"]));
    assert!(e.contains("--gpus"), "{e}");
    let e = fails(with(&["--device", "emu", "--gpus", "0,1", "--nodes", "2", "--rendezvous", "127.0.0.1:1"]));
    assert!(e.contains("NCCL"), "{e}");
}
