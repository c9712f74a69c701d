//! Graph capture and replay on the emulator (issue 12): a sampling step (one
//! model call) captured once and replayed on new inputs gives the bits of
//! an eager call, with no allocation, free or host synchronisation; a
//! training run in graph mode (`train --graph`: every step after the second
//! a replay, its per-step values read from the step scalars) ends on the
//! bits of an eager run — weights, EMA, AdamW moments and every logged loss
//! and gradient norm — and resumes bit-identically.

mod cli_common;
use cli_common::*;
use diffuse_tensor::gpu::emu::emu_device;
use diffuse_tensor::{ops, DType, Device, Tensor};
use diffuse_unet::{UNet, UNetConfig};
use std::path::Path;

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn a_replayed_sampling_step_is_bit_identical_to_an_eager_one_emu() {
    let dev = emu_device().unwrap();
    let Device::Gpu(g) = &dev else { panic!("the emulator is a GPU") };
    let cfg: UNetConfig = serde_json::from_str(
        r#"{"in_ch":1,"ch":8,"ch_mult":[1,2],"num_res_blocks":1,"attn_resolutions":[4],"dropout":0.0,"groups":4,"image_size":8}"#,
    )
    .unwrap();
    let model = UNet::new(cfg, 3, DType::F32, &dev).unwrap();
    let input = |seed: u64, ts: [f32; 3]| {
        let x = Tensor::randn([3, 1, 8, 8], seed, 0, DType::F32, &dev).unwrap();
        (x, Tensor::from_vec(ts.to_vec(), [3]).unwrap().to_device(&dev).unwrap())
    };
    let (mut x, mut t) = input(1, [5.0, 500.0, 999.0]);

    g.begin_capture().unwrap();
    let y = model.forward(&x, &t).unwrap();
    let graph = g.end_capture().unwrap();
    assert!(graph.launches() > 20, "{} launches", graph.launches());
    assert_eq!(bits(&y), bits(&model.forward(&x, &t).unwrap()), "the captured call ran as an eager one");

    for (seed, ts) in [(2, [0.0, 1.0, 2.0]), (3, [999.0, 10.0, 300.0])] {
        let (x2, t2) = input(seed, ts);
        ops::copy_into(&mut x, 0, &x2).unwrap();
        ops::copy_into(&mut t, 0, &t2).unwrap();
        let before = g.counts();
        graph.replay().unwrap();
        let d = g.counts() - before;
        assert_eq!((d.allocs, d.frees, d.host_syncs, d.htod), (0, 0, 0, 0), "{d:?}");
        // one graph launch; the kernels inside it are not driver calls of their own
        assert_eq!((d.graph_launches, d.launches), (1, 0), "{d:?}");
        let eager = model.forward(&x2, &t2).unwrap();
        assert_eq!(bits(&y), bits(&eager), "replay on input {seed}");
    }

    // A copy from the host cannot be captured; the error says so.
    g.begin_capture().unwrap();
    let err = Tensor::from_vec(vec![1.0f32], [1]).unwrap().to_device(&dev).unwrap_err().to_string();
    assert!(err.contains("inside a graph capture"), "{err}");
    drop(g.end_capture().unwrap());
    drop(graph);
    let y_after = model.forward(&x, &t).unwrap(); // memory given back is usable again
    assert_eq!(y_after.dims(), y.dims());
}

/// A small conditional 28x28 model (tiny-mnist's shape at half its width,
/// dropout on) so that the emulator is quick.
const SMALL: &str = r#"{"in_ch":1,"ch":8,"ch_mult":[1,2],"num_res_blocks":1,"attn_resolutions":[14],"dropout":0.1,"groups":4,"image_size":28}"#;

/// Conditional with class dropout, dropout in the model, clipping that
/// bites (a small max norm), EMA with warmup (its decay changes every
/// step) and a log read every other step (the step log's row changes).
fn train_emu(config: &Path, out: &Path, steps: u64, extra: &[&str]) -> String {
    let (config, out, steps) = (s(config), s(out), steps.to_string());
    let mut args = vec!["train", "--config", &config, "--out", &out, "--steps", &steps, "--device", "emu"];
    args.extend_from_slice(&["--batch-size", "2", "--sample-every", "0", "--checkpoint-every", "100", "--seed", "7"]);
    args.extend_from_slice(&["--conditional", "--class-dropout", "0.5", "--grad-clip", "0.05", "--log-every", "2"]);
    args.extend_from_slice(extra);
    ok(&args)
}

fn same_bits(a: &Path, b: &Path, what: &str) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert!(ta.len() > 50 && ta.keys().eq(tb.keys()), "{what}: tensor names differ");
    assert!(ta.keys().any(|n| n.contains("class_emb")), "{what}: not a conditional model");
    for (name, x) in &ta {
        let y = &tb[name];
        assert!(x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()), "{what}: {name} differs");
    }
}

// Not named `_emu`: fifteen emulated training steps through the CLI take
// minutes, so scripts/test.sh runs this once (thread order forward), not in
// each of its thread-order and no-reuse passes.
#[test]
fn a_graph_training_run_is_bit_identical_to_an_eager_one_and_resumes_on_the_emulator() {
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("small.json");
    std::fs::write(&config, SMALL).unwrap();
    let (eager, graph, split) = (d.path().join("eager"), d.path().join("graph"), d.path().join("split"));
    let out = train_emu(&config, &eager, 5, &[]);
    assert!(!out.contains("without a CUDA graph"), "{out}");
    let out = train_emu(&config, &graph, 5, &["--graph"]);
    assert!(!out.contains("without a CUDA graph"), "{out}");
    // step 1 eager, step 2 captured, steps 3..5 replayed (step 4 logged from
    // the log's second row); stopped after step 3 and resumed: eager, capture, replay
    train_emu(&config, &split, 3, &["--graph"]);
    ok(&["train", "--resume", &s(&split), "--steps", "5", "--device", "emu", "--graph"]);

    // weights, EMA and AdamW moments: every tensor of the checkpoint
    same_bits(&checkpoint(&eager, 5), &checkpoint(&graph, 5), "graph vs eager");
    same_bits(&checkpoint(&eager, 5), &checkpoint(&split, 5), "resumed graph run vs eager");
    let (le, lg, ls) = (logged(&eager), logged(&graph), logged(&split));
    assert_eq!(lg.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4, 5]);
    for (step, (loss, norm)) in &le {
        assert!(loss.is_finite() && *loss > 0.0 && *norm > 0.05, "step {step}: clipping must bite: {norm}");
        for (run, l) in [("graph", &lg), ("resumed graph", &ls)] {
            let (l2, n2) = l[step];
            assert_eq!((loss.to_bits(), norm.to_bits()), (l2.to_bits(), n2.to_bits()), "{run}: step {step}");
        }
    }
}

/// Once captured, a training step is one graph launch after two copies to
/// the device (the step scalars, and the next batch on the copy stream)
/// and one device copy (this step's batch from its slot into the buffer
/// the graph reads): no kernel launch of its own, no allocation, free or
/// synchronisation.
#[test]
fn a_replayed_training_step_is_one_graph_launch_and_two_copies_emu() {
    use diffuse_trainer::config::TrainConfig;
    use diffuse_trainer::train::{Start, Trainer};
    let d = tempfile::tempdir().unwrap();
    let model: diffuse_unet::UNetConfig = serde_json::from_str(SMALL).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist10k");
    let mut cfg = TrainConfig::for_model(model, data);
    (cfg.batch_size, cfg.steps, cfg.log_every, cfg.checkpoint_every, cfg.sample_every) = (2, 100, 3, 0, 0);
    let device = emu_device().unwrap();
    let mut t = Trainer::new(cfg, Start::Fresh, d.path().join("run"), device.clone()).unwrap();
    assert!(t.use_graph().is_none(), "one emulated GPU captures the step");
    t.train_step().unwrap(); // eager
    assert!(t.graph_launches().is_none());
    t.train_step().unwrap(); // captured
    t.read_log().unwrap(); // the log starts empty: step 3 is neither logged nor the log's last row
    let launches = t.graph_launches().expect("captured after one eager step");
    assert!(launches > 100, "{launches} launches in the graph");
    let counts = || device.driver_counts().unwrap();
    let c0 = counts();
    t.train_step().unwrap(); // step 3: a replay
    let s = counts() - c0;
    assert_eq!((s.allocs, s.frees, s.host_syncs, s.dtoh, s.memsets), (0, 0, 0, 0, 0), "{s:?}");
    assert_eq!((s.graph_launches, s.launches, s.htod, s.dtod), (1, 0, 2, 1), "{s:?}");
    assert_eq!((s.copy_stream_copies, s.stream_waits), (1, 2), "{s:?}");
    eprintln!("replayed training step ({launches} kernels inside): {s:?}");
    t.train_step().unwrap();
    let last = t.read_log().unwrap().expect("logged");
    assert_eq!(last.step, 4);
    assert!(last.loss.is_finite() && last.loss > 0.0 && last.grad_norm > 0.0, "{last:?}");

    // where a graph cannot hold the step the run says so and stays eager
    let mut cfg = t.cfg.clone();
    cfg.grad_accum = 2;
    let mut t2 = Trainer::new(cfg, Start::Fresh, d.path().join("run2"), device.clone()).unwrap();
    let why = t2.use_graph().expect("accumulation is not captured");
    assert!(why.starts_with("training without a CUDA graph: gradient accumulation"), "{why}");
}
