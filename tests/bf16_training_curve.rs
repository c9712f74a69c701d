//! bf16 training works (issue 13): 300 steps of the tiny-mnist model on the
//! bundled digits with `--precision bf16` (the inputs of every convolution,
//! linear layer and attention product rounded to bf16, f32 sums, as on the
//! tensor cores)
//! against the same run in fp32, same seed, same batches, noise and
//! timesteps. The bf16 run must learn as the fp32 one does.
//!
//! Stated margin: the mean loss of every 50-step window of the bf16 run is
//! within 5% of the fp32 run's (measured: at most 1.19%, in the window of
//! steps 101-150, where the loss falls fastest; the runs are
//! deterministic, so the figure is the same on every machine with the same
//! build). Runs on the CPU, whose bf16 path rounds exactly the inputs the
//! tensor-core kernels round (both are held to one rounding oracle in
//! crates/tensor/tests/tensor_core.rs, and a bf16 training step on the
//! emulator to PyTorch's f64 step in tests/unet_step_per_device.rs): 300
//! emulated steps would take hours on a 2-core machine. `scripts/gpu-check.sh`
//! repeats this comparison on a real GPU's tensor cores.

mod cli_common;
use cli_common::*;
use std::path::Path;

const STEPS: usize = 300;
const WINDOW: usize = 50;
const MARGIN: f64 = 0.05;

fn train(run: &Path, precision: &str) {
    ok(&[
        "train",
        "--config",
        "tiny-mnist",
        "--device",
        "cpu",
        "--steps",
        &STEPS.to_string(),
        "--batch-size",
        "8",
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
    ]);
}

fn losses(run: &Path) -> Vec<f64> {
    let logged = logged(run);
    assert_eq!(logged.len(), STEPS, "every step logged in {}", run.display());
    logged.values().map(|&(loss, _)| loss).collect()
}

#[test]
fn a_bf16_run_follows_the_fp32_loss_curve_over_300_steps() {
    let d = tempfile::tempdir().unwrap();
    let (bf16_run, fp32_run) = (d.path().join("bf16"), d.path().join("fp32"));
    std::thread::scope(|scope| {
        scope.spawn(|| train(&bf16_run, "bf16"));
        train(&fp32_run, "fp32");
    });
    let (bf16, fp32) = (losses(&bf16_run), losses(&fp32_run));

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
    eprintln!("bf16 vs fp32 over {STEPS} steps: worst {WINDOW}-step window {:.2}% apart", 100.0 * worst);
}
