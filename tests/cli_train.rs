//! End-to-end tests of the `diffuse` binary: training on the bundled digits,
//! exact resume, sampling, and every kind of bad input giving one clear
//! error line and a non-zero exit without touching earlier checkpoints.

mod cli_common;
use cli_common::*;
use std::path::{Path, PathBuf};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

const FAST: &[&str] =
    &["--config", "tiny-mnist", "--device", "cpu", "--batch-size", "8", "--sample-every", "0", "--log-every", "1"];

fn train(out: &Path, steps: u64, extra: &[&str]) -> String {
    let steps = steps.to_string();
    let out = s(out);
    let mut args = vec!["train", "--out", &out, "--steps", &steps];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    ok(&args)
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

fn newest_checkpoint(run: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v.pop().expect("a checkpoint")
}

#[test]
fn loss_falls_over_200_steps_of_the_tiny_preset_on_the_bundled_digits() {
    let d = tmp();
    let run = d.path().join("run");
    train(&run, 200, &["--checkpoint-every", "200", "--lr", "1e-3"]);
    let l = losses(&run);
    assert_eq!(l.len(), 200);
    let first: f64 = l[..20].iter().sum::<f64>() / 20.0;
    let last: f64 = l[180..].iter().sum::<f64>() / 20.0;
    println!("tiny-mnist: mean loss of steps 1-20 {first:.4}, of steps 181-200 {last:.4}");
    assert!(last < 0.6 * first, "loss did not fall: {first} -> {last}");
    assert!(run.join("loss.png").is_file() && run.join("config.json").is_file());
}

#[test]
fn resume_is_bit_identical_to_an_uninterrupted_run() {
    let d = tmp();
    let straight = d.path().join("straight");
    let split = d.path().join("split");
    let extra = ["--checkpoint-every", "6", "--keep", "5", "--grad-accum", "2"];
    train(&straight, 12, &extra);
    train(&split, 6, &extra);
    let split_s = s(&split);
    let mut args = vec!["train", "--resume", &split_s, "--steps", "12"];
    args.extend_from_slice(FAST);
    ok(&args);
    assert_same_tensors(&newest_checkpoint(&straight), &newest_checkpoint(&split));
    assert_eq!(losses(&straight), losses(&split), "the logged losses differ");
}

fn assert_same_tensors(a: &Path, b: &Path) {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (ta, tb) =
        (safetensors::SafeTensors::deserialize(&a).unwrap(), safetensors::SafeTensors::deserialize(&b).unwrap());
    let mut names = ta.names();
    names.sort();
    assert!(names.len() > 100);
    for n in names {
        assert_eq!(ta.tensor(n).unwrap().data(), tb.tensor(n).unwrap().data(), "tensor {n} differs after resume");
    }
}

#[test]
fn min_snr_and_stratified_timesteps_are_kept_by_resume_bit_for_bit() {
    let d = tmp();
    let (straight, split, plain) = (d.path().join("straight"), d.path().join("split"), d.path().join("plain"));
    let recipe = ["--checkpoint-every", "3", "--keep", "5", "--target", "v"];
    let extra = [&recipe[..], &["--loss-weighting", "min-snr:3", "--timestep-sampling", "stratified"]].concat();
    train(&straight, 6, &extra);
    train(&split, 3, &extra);
    train(&plain, 6, &recipe);
    let config = std::fs::read_to_string(split.join("config.json")).unwrap();
    assert!(config.contains("\"min-snr\"") && config.contains("\"gamma\": 3.0"), "{config}");
    assert!(config.contains("\"timestep_sampling\": \"stratified\""), "{config}");
    // Resume without the flags: the run's config brings them back.
    let split_s = s(&split);
    let mut args = vec!["train", "--resume", &split_s, "--steps", "6"];
    args.extend_from_slice(FAST);
    ok(&args);
    assert_same_tensors(&newest_checkpoint(&straight), &newest_checkpoint(&split));
    assert_eq!(losses(&straight), losses(&split));
    // And they change training.
    assert_ne!(losses(&straight), losses(&plain));
    let err = fails(&["train", "--out", &s(&d.path().join("bad")), "--loss-weighting", "min-snr:0"]);
    assert!(err.contains("gamma must be positive"), "{err}");
}

#[test]
fn short_training_then_sampling_writes_finite_images_in_unit_range() {
    let d = tmp();
    let run = d.path().join("run");
    train(&run, 4, &["--checkpoint-every", "4"]);
    let (png, npy, traj) = (d.path().join("s.png"), d.path().join("s.npy"), d.path().join("t.png"));
    let samplers: [&[&str]; 6] = [
        &["--sampler", "ddim", "--eta", "0"],
        &["--sampler", "ddim", "--eta", "1"],
        &["--sampler", "dpm++2m"],
        &["--sampler", "dpm++2m-sde", "--spacing", "logsnr"],
        &["--sampler", "heun", "--spacing", "uniform"],
        &["--sampler", "dpm++2m", "--spacing", "karras"],
    ];
    for sampler in samplers {
        let mut args = vec!["sample", "--device", "cpu", "--n", "6"];
        let (run_s, png_s, npy_s, traj_s) = (s(&run), s(&png), s(&npy), s(&traj));
        args.extend_from_slice(&["--checkpoint", &run_s, "--out", &png_s, "--npy", &npy_s, "--trajectory", &traj_s]);
        args.extend_from_slice(sampler);
        args.extend_from_slice(&["--steps", "5"]);
        ok(&args);
        let bytes = std::fs::read(&npy).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = String::from_utf8_lossy(&bytes[10..10 + header_len]);
        assert!(header.contains("'shape': (6, 1, 28, 28)"), "{header}");
        let vals: Vec<f32> =
            bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(vals.len(), 6 * 28 * 28);
        assert!(vals.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
        assert!(png.is_file() && traj.is_file());
    }
}

#[test]
fn ddpm_sampling_runs_on_a_short_schedule() {
    let d = tmp();
    let run = d.path().join("run");
    train(&run, 2, &["--checkpoint-every", "2", "--timesteps", "20"]);
    let npy = d.path().join("d.npy");
    for v in ["large", "small"] {
        ok(&[
            "sample",
            "--device",
            "cpu",
            "--checkpoint",
            &s(&run),
            "--n",
            "3",
            "--sampler",
            "ddpm",
            "--variance",
            v,
            "--out",
            &s(&d.path().join("d.png")),
            "--npy",
            &s(&npy),
        ]);
    }
}

#[test]
fn ddim_with_eta_zero_and_the_same_seed_is_deterministic() {
    let d = tmp();
    let run = d.path().join("run");
    train(&run, 2, &["--checkpoint-every", "2"]);
    let read = |name: &str, seed: &str| {
        let npy = d.path().join(name);
        ok(&[
            "sample",
            "--device",
            "cpu",
            "--checkpoint",
            &s(&run),
            "--n",
            "4",
            "--steps",
            "4",
            "--seed",
            seed,
            "--out",
            &s(&d.path().join("x.png")),
            "--npy",
            &s(&npy),
        ]);
        std::fs::read(npy).unwrap()
    };
    assert_eq!(read("a.npy", "5"), read("b.npy", "5"));
    assert_ne!(read("a.npy", "5"), read("c.npy", "6"));
}

#[test]
fn the_sde_sampler_is_deterministic_per_seed_and_spacing_is_checked() {
    let d = tmp();
    let run = d.path().join("run");
    train(&run, 2, &["--checkpoint-every", "2"]);
    let (run_s, png) = (s(&run), s(&d.path().join("x.png")));
    let read = |name: &str, seed: &str| {
        let npy = s(&d.path().join(name));
        let args = ["sample", "--device", "cpu", "--checkpoint", &run_s, "--n", "3", "--batch", "2", "--steps", "4"];
        let mut args = args.to_vec();
        args.extend_from_slice(&["--sampler", "dpm++2m-sde", "--seed", seed, "--out", &png, "--npy", &npy]);
        let out = ok(&args);
        assert!(out.contains("4 model calls per batch"), "{out}");
        std::fs::read(d.path().join(name)).unwrap()
    };
    assert_eq!(read("a.npy", "5"), read("b.npy", "5"));
    assert_ne!(read("a.npy", "5"), read("c.npy", "6"));
    // The default sampler is DPM-Solver++(2M) SDE, Karras spacing, 20 steps.
    let sample_npy = |name: &str, extra: &[&str]| {
        let npy = s(&d.path().join(name));
        let mut args =
            vec!["sample", "--device", "cpu", "--checkpoint", &run_s, "--n", "2", "--out", &png, "--npy", &npy];
        args.extend_from_slice(extra);
        let out = ok(&args);
        assert!(out.contains("20 model calls per batch"), "{out}");
        std::fs::read(d.path().join(name)).unwrap()
    };
    let explicit = ["--sampler", "dpm++2m-sde", "--steps", "20", "--spacing", "karras"];
    let default = sample_npy("default.npy", &[]);
    assert_eq!(default, sample_npy("explicit.npy", &explicit));
    // The ramp's top: the default cap (160) is above this linear schedule's
    // top (157), so it changes nothing; a lower one moves every level.
    assert_eq!(default, sample_npy("uncapped.npy", &["--sigma-max", "inf"]));
    assert_ne!(default, sample_npy("capped.npy", &["--sigma-max", "20"]));
    let refused = |extra: &[&str]| {
        let mut args = vec!["sample", "--device", "cpu", "--checkpoint", &run_s, "--out", &png];
        args.extend_from_slice(extra);
        fails(&args)
    };
    let err = refused(&["--sampler", "ddim", "--spacing", "karras"]);
    assert!(err.contains("--spacing applies to"), "{err}");
    let err = refused(&["--sampler", "ddim", "--sigma-max", "80"]);
    assert!(err.contains("--sigma-max applies to"), "{err}");
    let err = refused(&["--spacing", "uniform", "--sigma-max", "80"]);
    assert!(err.contains("--sigma-max applies to"), "{err}");
    let err = refused(&["--sigma-max", "0"]);
    assert!(err.contains("sigma_max must be above"), "{err}");
    let err = refused(&["--sampler", "heun", "--steps", "1000"]);
    assert!(err.contains("steps must be in 1..=999"), "{err}");
}

fn mnist_dir_with(d: &Path, images: &[u8]) -> PathBuf {
    let dir = d.join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte"), images).unwrap();
    dir
}

fn idx_images(n: u32, h: u32, w: u32, magic: u32, body: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [magic, n, h, w] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend((0..body).map(|i| (i * 7 % 256) as u8));
    v
}

#[test]
fn bad_data_gives_one_clear_error_and_leaves_checkpoints_alone() {
    let d = tmp();
    let run = d.path().join("run");
    train(&run, 2, &["--checkpoint-every", "2"]);
    let ckpt = newest_checkpoint(&run);
    let before = std::fs::read(&ckpt).unwrap();
    let run_s = s(&run);
    let cases: Vec<(PathBuf, &str)> = vec![
        (d.path().join("nowhere"), "no such file"),
        (mnist_dir_with(&d.path().join("a"), &idx_images(10, 28, 28, 0x803, 28 * 28 * 5)), "truncated"),
        (mnist_dir_with(&d.path().join("b"), &idx_images(10, 28, 28, 0x801, 28 * 28 * 10)), "magic"),
        (mnist_dir_with(&d.path().join("c"), &idx_images(10, 32, 32, 0x803, 32 * 32 * 10)), "expects"),
        (mnist_dir_with(&d.path().join("e"), b"\x1f\x8b\x08\x00garbage"), "gzip"),
    ];
    for (data, want) in cases {
        let data_s = s(&data);
        // Resuming the run on bad data must fail without touching its checkpoint.
        let err = fails(&["train", "--resume", &run_s, "--data", &data_s, "--device", "cpu", "--steps", "4"]);
        assert!(err.to_lowercase().contains(want), "data {data_s}: expected {want:?} in {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    assert_eq!(std::fs::read(&ckpt).unwrap(), before, "an earlier checkpoint changed");
}

#[test]
fn bad_checkpoints_give_clear_errors() {
    let d = tmp();
    let run = d.path().join("run");
    train(&run, 2, &["--checkpoint-every", "2"]);
    let ckpt = newest_checkpoint(&run);
    let bytes = std::fs::read(&ckpt).unwrap();
    let truncated = d.path().join("trunc.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = s(&d.path().join("x.png"));
    let err = fails(&["sample", "--device", "cpu", "--checkpoint", &s(&truncated), "--out", &out]);
    assert!(err.contains("truncated") || err.contains("corrupt"), "{err}");
    let foreign =
        s(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/testvectors/unet_tiny_step.safetensors"));
    let err = fails(&["sample", "--device", "cpu", "--checkpoint", &foreign, "--out", &out]);
    assert!(err.contains("not a diffuse checkpoint"), "{err}");
    let err = fails(&["train", "--resume", &s(&truncated), "--device", "cpu"]);
    assert!(err.contains("truncated") || err.contains("corrupt"), "{err}");
    let err = fails(&["sample", "--device", "cpu", "--checkpoint", &s(&d.path().join("missing")), "--out", &out]);
    assert!(err.contains("no such file"), "{err}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), bytes);
}

#[test]
fn a_config_that_does_not_fit_the_data_is_refused() {
    let d = tmp();
    let run = d.path().join("run");
    train(&run, 1, &["--checkpoint-every", "1"]);
    let err = fails(&["train", "--config", "tiny-mnist", "--device", "cpu", "--steps", "1", "--out", &s(&run)]);
    assert!(err.contains("already holds a run"), "{err}");
    let err =
        fails(&["train", "--config", "cifar10", "--device", "cpu", "--steps", "1", "--out", &s(&d.path().join("r"))]);
    assert!(err.contains("expects"), "{err}");
    let err = fails(&[
        "train",
        "--config",
        "tiny-mnist",
        "--device",
        "cpu",
        "--steps",
        "1",
        "--batch-size",
        "0",
        "--out",
        &s(&d.path().join("r")),
    ]);
    assert!(err.contains("batch size"), "{err}");
    let err = fails(&["train", "--config", "nosuch", "--device", "cpu"]);
    assert!(err.contains("neither a preset"), "{err}");
}

#[test]
fn info_prints_parameter_counts() {
    assert!(ok(&["info", "--config", "cifar10"]).contains("parameters: 35746307"));
    assert!(ok(&["info", "--config", "mnist"]).contains("parameters: 1623169"));
    let out = ok(&["info"]);
    assert!(out.contains("cuda:") && out.contains("threads:"), "{out}");
}

#[test]
fn verify_step_passes_on_both_test_vector_files_on_cpu_and_emulator() {
    for device in ["cpu", "emu"] {
        for f in ["unet_tiny_step.safetensors", "unet_mnist_step.safetensors"] {
            let path = format!("tests/data/testvectors/{f}");
            let out = ok(&["verify-step", &path, "--device", device]);
            eprintln!("{}", out.trim());
            let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
            assert_eq!(v["pass"], true);
        }
    }
}

#[test]
fn eval_reports_denoising_metrics_per_timestep() {
    let d = tmp();
    let run = d.path().join("run");
    train(&run, 2, &["--checkpoint-every", "2"]);
    let out = ok(&["eval", "--device", "cpu", "--checkpoint", &s(&run), "--n", "10", "--t", "10,900"]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        for k in ["loss", "x0_mse", "x0_psnr_db", "x0_ssim"] {
            assert!(l[k].as_f64().unwrap().is_finite(), "{k} in {l}");
        }
    }
    // Less noise must leave an easier reconstruction.
    assert!(lines[0]["x0_mse"].as_f64() < lines[1]["x0_mse"].as_f64());
    let err = fails(&["eval", "--device", "cpu", "--checkpoint", &s(&run), "--t", "1000"]);
    assert!(err.contains("outside"), "{err}");
}
