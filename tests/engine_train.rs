//! The training loop on the CUDA emulator with the GPU engine (caching
//! allocator, loss and gradient norm kept on the device and read on log
//! steps, clipping, AdamW and EMA as multi-tensor launches): the weights
//! follow the CPU's within rounding, and a resumed run that logged at other
//! steps ends on the same bits as a straight one.

mod cli_common;
use cli_common::*;
use std::path::Path;

/// A small 28x28 model (dropout on, attention at 14) so that the emulator is quick.
const SMALL: &str = r#"{"in_ch":1,"ch":8,"ch_mult":[1,2],"num_res_blocks":1,"attn_resolutions":[14],"dropout":0.1,"groups":4,"image_size":28}"#;

fn train(config: &Path, out: &Path, device: &str, steps: u64, extra: &[&str]) {
    let (config, out, steps) = (s(config), s(out), steps.to_string());
    let mut args = vec!["train", "--config", &config, "--out", &out, "--steps", &steps, "--device", device];
    args.extend_from_slice(&["--batch-size", "2", "--sample-every", "0", "--checkpoint-every", "100", "--seed", "5"]);
    args.extend_from_slice(extra);
    ok(&args);
}

#[test]
fn emulator_training_matches_the_cpu_and_resumes_bit_identical() {
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("small.json");
    std::fs::write(&config, SMALL).unwrap();
    let (cpu, emu, split) = (d.path().join("cpu"), d.path().join("emu"), d.path().join("split"));
    train(&config, &cpu, "cpu", 3, &["--log-every", "1"]);
    train(&config, &emu, "emu", 3, &["--log-every", "1"]);
    // logged at other steps, stopped and resumed: the device-side log must not matter
    train(&config, &split, "emu", 2, &["--log-every", "2"]);
    let split_s = s(&split);
    ok(&["train", "--resume", &split_s, "--steps", "3", "--device", "emu"]);

    let (tc, te, ts) = (tensors(&checkpoint(&cpu, 3)), tensors(&checkpoint(&emu, 3)), tensors(&checkpoint(&split, 3)));
    assert!(te.len() > 50 && te.keys().eq(tc.keys()) && te.keys().eq(ts.keys()));
    let mut worst = 0.0f64;
    for (name, e) in &te {
        let (c, r) = (&tc[name], &ts[name]);
        assert!(e.iter().zip(r).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: the resumed run differs");
        let scale = c.iter().fold(1e-3f64, |m, v| m.max(v.abs() as f64));
        let diff = e.iter().zip(c).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
        worst = worst.max(diff / scale);
        assert!(diff <= 1e-3 * scale, "{name}: emulator vs CPU differ by {diff} (scale {scale})");
    }
    eprintln!("worst relative weight difference emu vs cpu after 3 steps: {worst:.2e}");
    let (lc, le, ls) = (logged(&cpu), logged(&emu), logged(&split));
    assert_eq!(le.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(ls.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    for step in [1, 2, 3] {
        let ((l_c, g_c), (l_e, g_e)) = (lc[&step], le[&step]);
        assert_eq!(le[&step].0.to_bits(), ls[&step].0.to_bits(), "step {step}: logged loss");
        assert!((l_c - l_e).abs() <= 1e-4 * l_c.abs() && (g_c - g_e).abs() <= 1e-3 * g_c.abs(), "step {step}");
    }
}

/// The bar of issue 12 on the emulator: once warm, a training step makes no
/// allocation, no free and no host synchronisation; reading the log on a
/// logged step is one synchronisation (one download).
#[test]
fn steady_state_training_steps_make_no_allocation_and_sync_once_per_logged_step() {
    use diffuse_tensor::gpu::emu::emu_device;
    use diffuse_trainer::config::TrainConfig;
    use diffuse_trainer::train::{Start, Trainer};
    let d = tempfile::tempdir().unwrap();
    let model: diffuse_unet::UNetConfig = serde_json::from_str(SMALL).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist10k");
    let mut cfg = TrainConfig::for_model(model, data);
    (cfg.batch_size, cfg.steps, cfg.log_every, cfg.checkpoint_every, cfg.sample_every) = (2, 100, 2, 0, 0);
    let device = emu_device().unwrap();
    let mut t = Trainer::new(cfg, Start::Fresh, d.path().join("run"), device.clone()).unwrap();
    let counts = || device.driver_counts().unwrap();
    for _ in 0..2 {
        t.train_step().unwrap(); // warm-up: the cache fills, EMA and moments get their own buffers
    }
    t.read_log().unwrap();
    let c0 = counts();
    t.train_step().unwrap(); // step 3: not logged
    let c1 = counts();
    t.train_step().unwrap(); // step 4: logged (log_every 2); the log is read here or below
    let last = t.read_log().unwrap().expect("two steps were logged");
    let c2 = counts();
    let s = c1 - c0;
    assert_eq!((s.allocs, s.frees, s.host_syncs, s.dtoh), (0, 0, 0, 0), "step 3: {s:?}");
    assert!(s.launches > 100, "step 3: {s:?}");
    // flat buffers: the multi-tensor tables are not uploaded again; what
    // is left is the batch (one copy from a pinned buffer, prefetched),
    // the step scalars (Philox steps, EMA factors, log row, AdamW's
    // constants: one pinned copy) and the table of the step's gradients
    // (copied into the flat buffer in one launch)
    assert_eq!((s.htod, s.pinned_allocs, s.pinned_frees), (3, 0, 0), "step 3: {s:?}");
    // the gradients reach their flat buffer in one launch; the one device
    // copy is the loss into the step log
    assert_eq!(s.dtod, 1, "step 3: {s:?}");
    // the next batch's copy runs on the copy stream beside the step: the
    // compute stream waits on its event, the copy stream on the one after
    // the kernels that last read its slot
    assert_eq!((s.copy_stream_copies, s.stream_waits), (1, 2), "step 3: {s:?}");
    eprintln!("steady-state step: {s:?}");
    let s = c2 - c1;
    assert_eq!((s.allocs, s.frees, s.host_syncs, s.dtoh), (0, 0, 1, 1), "step 4 and its log read: {s:?}");
    assert_eq!(last.step, 4);
    assert!(last.loss.is_finite() && last.loss > 0.0 && last.grad_norm > 0.0, "{last:?}");
}

/// The staged inputs on the emulator (one pinned copy per micro-batch, the
/// next one prefetched): with gradient accumulation, the v target and
/// min-SNR weights (every staged field in use), a run stopped and resumed
/// between steps ends on the bits of a straight one and follows the CPU.
#[test]
fn staged_inputs_with_accumulation_and_weights_resume_bit_identical_on_the_emulator() {
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("small.json");
    std::fs::write(&config, SMALL).unwrap();
    let recipe = ["--grad-accum", "2", "--target", "v", "--loss-weighting", "min-snr:3", "--log-every", "1"];
    let (cpu, straight, split) = (d.path().join("cpu"), d.path().join("straight"), d.path().join("split"));
    train(&config, &cpu, "cpu", 3, &recipe);
    train(&config, &straight, "emu", 3, &recipe);
    train(&config, &split, "emu", 1, &recipe);
    ok(&["train", "--resume", &s(&split), "--steps", "3", "--device", "emu"]);
    let (tc, te, ts) =
        (tensors(&checkpoint(&cpu, 3)), tensors(&checkpoint(&straight, 3)), tensors(&checkpoint(&split, 3)));
    for (name, e) in &te {
        assert!(e.iter().zip(&ts[name]).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: the resumed run differs");
        let c = &tc[name];
        let scale = c.iter().fold(1e-3f64, |m, v| m.max(v.abs() as f64));
        let diff = e.iter().zip(c).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
        assert!(diff <= 1e-3 * scale, "{name}: emulator vs CPU differ by {diff} (scale {scale})");
    }
    let (le, ls) = (logged(&straight), logged(&split));
    for step in [1, 2, 3] {
        assert_eq!(le[&step].0.to_bits(), ls[&step].0.to_bits(), "step {step}: logged loss");
    }
}
