//! bf16 training works (issue 13): 300 steps of the tiny-mnist model on the
//! bundled digits with `--precision bf16` against the same run in fp32, same
//! seed, same batches, noise and timesteps. The bf16 run must learn as the
//! fp32 one does. Two comparisons:
//!
//! - on the CUDA emulator: the bf16 run's convolutions, linear layers and
//!   attention run the tensor-core kernels (`kernels/*_tc.cu`, wmma bf16
//!   m16n16k16, f32 accumulators; the emulator rounds exactly as specified),
//!   at batch 1 (the emulator takes ~1 s a step here), against the fp32 run
//!   on the CPU reference (the devices draw the same batches, noise and
//!   timesteps: their fp32 runs agree to f32 rounding,
//!   tests/unet_step_per_device.rs). The emulator runs without its hazard
//!   detector: the kernels' races are the per-kernel tests' business, in
//!   every thread order;
//! - on the CPU at batch 8: the inputs of every convolution, linear layer and
//!   attention product rounded to bf16 (as on the tensor cores: both paths
//!   are held to one rounding oracle in crates/tensor/tests/tensor_core.rs
//!   and attention_tc.rs), f32 sums.
//!
//! Stated margin: the mean loss of every 50-step window of the bf16 run is
//! within 5% of the fp32 run's (measured: see each test; the runs are
//! deterministic, so the figures are the same on every machine with the same
//! build). `scripts/gpu-check.sh` repeats the comparison on a real GPU's
//! tensor cores.

mod cli_common;
use cli_common::*;
use std::path::Path;

const STEPS: usize = 300;
const WINDOW: usize = 50;
const MARGIN: f64 = 0.05;

fn train(run: &Path, device: &str, precision: &str, batch_size: usize) {
    let args = [
        "train",
        "--config",
        "tiny-mnist",
        "--device",
        device,
        "--steps",
        &STEPS.to_string(),
        "--batch-size",
        &batch_size.to_string(),
        "--precision",
        precision,
        "--seed",
        "0",
        "--log-every",
        "1",
        "--sample-every",
        "0",
        "--checkpoint-every",
        &STEPS.to_string(),
        "--out",
        &s(run),
    ];
    // Hazard detector off: 300 steps with it would take hours.
    let o = command(&args).env("DIFFUSE_EMU_RACECHECK", "0").output().expect("run diffuse");
    assert!(
        o.status.success(),
        "diffuse {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn losses(run: &Path) -> Vec<f64> {
    let logged = logged(run);
    assert_eq!(logged.len(), STEPS, "every step logged in {}", run.display());
    logged.values().map(|&(loss, _)| loss).collect()
}

/// Both runs' 50-step windows within the margin, both learning, and bf16
/// really in use; returns the worst window's relative gap.
fn compare(bf16_run: &Path, fp32_run: &Path) -> f64 {
    let (bf16, fp32) = (losses(bf16_run), losses(fp32_run));

    // bf16 is really in use: the per-step losses differ once the output
    // layer (zero at initialisation) has moved.
    let differing = bf16.iter().zip(&fp32).filter(|(a, b)| a != b).count();
    assert!(differing > STEPS / 2, "only {differing} of {STEPS} losses differ: is bf16 rounding applied?");

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut worst = 0.0f64;
    for (w, (a, b)) in bf16.chunks(WINDOW).zip(fp32.chunks(WINDOW)).enumerate() {
        let (ma, mb) = (mean(a), mean(b));
        let rel = (ma - mb).abs() / mb;
        worst = worst.max(rel);
        eprintln!(
            "steps {:3}-{:3}: bf16 {ma:.5}  fp32 {mb:.5}  {:.2}% apart",
            w * WINDOW + 1,
            (w + 1) * WINDOW,
            100.0 * rel
        );
        assert!(
            rel <= MARGIN,
            "steps {}-{}: bf16 mean loss {ma:.5} vs fp32 {mb:.5} ({:.1}% apart, margin {:.0}%)",
            w * WINDOW + 1,
            (w + 1) * WINDOW,
            100.0 * rel,
            100.0 * MARGIN
        );
    }
    // both learn: the last window's loss is a small fraction of the first's
    for (name, l) in [("bf16", &bf16), ("fp32", &fp32)] {
        let (first, last) = (mean(&l[..WINDOW]), mean(&l[STEPS - WINDOW..]));
        assert!(last < 0.1 * first, "{name}: loss {first:.4} -> {last:.4} in {STEPS} steps");
    }
    worst
}

/// Measured: worst window 1.52% apart (steps 101-150, where the loss falls
/// fastest).
#[test]
fn a_bf16_run_follows_the_fp32_loss_curve_over_300_steps() {
    let d = tempfile::tempdir().unwrap();
    let (bf16_run, fp32_run) = (d.path().join("bf16"), d.path().join("fp32"));
    std::thread::scope(|scope| {
        scope.spawn(|| train(&bf16_run, "cpu", "bf16", 8));
        train(&fp32_run, "cpu", "fp32", 8);
    });
    let worst = compare(&bf16_run, &fp32_run);
    eprintln!("CPU, bf16 vs fp32 over {STEPS} steps: worst {WINDOW}-step window {:.2}% apart", 100.0 * worst);
}

/// Measured: worst window 0.88% apart (steps 251-300; 0.78% in 151-200); 297
/// of the 300 losses differ. ~7 minutes on 2 cores (412-413 s in CI).
#[test]
fn a_bf16_run_on_the_emulated_tensor_cores_follows_the_fp32_loss_curve_over_300_steps() {
    let d = tempfile::tempdir().unwrap();
    let (bf16_run, fp32_run) = (d.path().join("bf16-emu"), d.path().join("fp32-cpu"));
    train(&fp32_run, "cpu", "fp32", 1);
    train(&bf16_run, "emu", "bf16", 1);
    let worst = compare(&bf16_run, &fp32_run);
    eprintln!("emulator bf16 vs CPU fp32 over {STEPS} steps: worst {WINDOW}-step window {:.2}% apart", 100.0 * worst);
}
