//! Gradient buckets that overlap the backward (issue 18): data-parallel
//! ranks on the CPU joined by the in-process communicator, a conditional
//! model with class dropout and dropout, gradient accumulation 2, and small
//! buckets (several per step).
//!
//! - Overlap happened, without timing: each bucket records how many layer
//!   backwards had completed when it was started; the first starts after
//!   the first layer, long before the backward ends, and in order.
//! - The sums are the bits of the same buckets started after the backward.
//! - The overlapped run follows one rank with the same global batch within
//!   float32 rounding (a bucket started before its gradients are final,
//!   or by an earlier micro-batch's backward, fails here).

use diffuse_tensor::comm::{local, Communicator};
use diffuse_tensor::Device;
use diffuse_trainer::config::TrainConfig;
use diffuse_trainer::grad_buckets::OverlapReport;
use diffuse_trainer::train::{Start, Trainer};
use std::path::Path;
use std::sync::Arc;

const SMALL: &str = r#"{"in_ch":1,"ch":8,"ch_mult":[1,2],"num_res_blocks":1,"attn_resolutions":[14],"dropout":0.1,"groups":4,"image_size":28}"#;
const LR: f64 = 1e-3;
const STEPS: u64 = 2;
/// Small buckets: about fifteen for this model.
const BUCKET_ELEMS: usize = 4000;

fn config() -> TrainConfig {
    let model: diffuse_unet::UNetConfig = serde_json::from_str(SMALL).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist10k");
    let mut cfg = TrainConfig::for_model(model, data);
    (cfg.batch_size, cfg.grad_accum, cfg.steps, cfg.log_every) = (4, 2, STEPS, 1);
    (cfg.checkpoint_every, cfg.sample_every, cfg.seed, cfg.lr, cfg.warmup_steps) = (0, 0, 5, LR, 0);
    (cfg.conditional, cfg.class_dropout) = (true, 0.5);
    cfg
}

/// What one rank ends with: every weight's bits and the bucket report.
struct RankEnd {
    weights: Vec<(String, Vec<f32>)>,
    report: Option<OverlapReport>,
    losses: Vec<f64>,
}

/// Trains `STEPS` steps on `world` CPU ranks (one alone, without a communicator).
fn train(world: usize, overlap: bool, bucket_elems: usize) -> Vec<RankEnd> {
    let d = tempfile::tempdir().unwrap();
    let run_rank = |comm: Option<Arc<dyn Communicator>>| -> RankEnd {
        let out = d.path().join("run");
        let mut t = Trainer::new_rank(config(), Start::Fresh, out, Device::Cpu, comm).unwrap();
        t.set_grad_buckets(bucket_elems, overlap);
        let mut losses = Vec::new();
        for _ in 0..STEPS {
            t.train_step().unwrap();
            losses.push(t.read_log().unwrap().unwrap().loss);
        }
        let weights = t.model.params.iter().map(|(n, v)| (n.to_string(), v.to_vec_f32().unwrap())).collect();
        RankEnd { weights, report: t.overlap_report().cloned(), losses }
    };
    if world == 1 {
        return vec![run_rank(None)];
    }
    let comms = local::group_with_timeout(world, std::time::Duration::from_secs(120));
    std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|c| {
                let c: Arc<dyn Communicator> = Arc::new(c);
                s.spawn(|| run_rank(Some(c)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn same_bits(a: &RankEnd, b: &RankEnd) -> bool {
    a.weights.len() == b.weights.len()
        && a.weights.iter().zip(&b.weights).all(|((na, x), (nb, y))| {
            na == nb && x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

/// `ranks` follows `one` (one rank, the same global batch) within float32
/// rounding: AdamW moves a weight by about lr a step, so the bound is 1% of
/// a step per step.
fn follows_one_rank(one: &RankEnd, ranks: &RankEnd) {
    let mut worst = (0.0f64, String::new());
    for ((name, x), (_, y)) in one.weights.iter().zip(&ranks.weights) {
        let diff = x.iter().zip(y).fold(0.0f64, |m, (p, q)| m.max((*p as f64 - *q as f64).abs()));
        if diff > worst.0 {
            worst = (diff, name.clone());
        }
    }
    eprintln!("2 overlapped ranks vs 1: largest weight difference {:.2e} lr ({})", worst.0 / LR, worst.1);
    assert!(worst.0 <= 0.01 * LR * STEPS as f64, "{} differs by {:.2e} lr", worst.1, worst.0 / LR);
    for (l1, l2) in one.losses.iter().zip(&ranks.losses) {
        assert!((l1 - l2).abs() <= 1e-5 * l1.abs(), "loss {l1} vs {l2}");
    }
}

#[test]
fn gradient_buckets_start_during_the_backward_and_sum_the_same_bits_as_after_it() {
    let overlapped = train(2, true, BUCKET_ELEMS);
    let after = train(2, false, BUCKET_ELEMS);
    let one = train(1, true, BUCKET_ELEMS);

    follows_one_rank(&one[0], &overlapped[0]);

    // the same sums, bit for bit, on every rank
    for rank in 0..2 {
        assert!(same_bits(&overlapped[rank], &after[rank]), "rank {rank}: overlapped vs after the backward");
        assert_eq!(overlapped[rank].losses, after[rank].losses);
    }
    assert!(same_bits(&overlapped[0], &overlapped[1]), "the ranks hold the same weights");

    let r = overlapped[0].report.clone().unwrap();
    eprintln!("overlapped buckets: {r:?}");
    let n = r.bucket_elems.len();
    assert!(n >= 4, "small buckets make several: {r:?}");
    assert_eq!(r.launched_after.len(), n, "every bucket is started once: {r:?}");
    // 2 + 5 up + 3 middle + 3 down + conv_in + class table + time embedding
    assert_eq!(r.layers, 16, "{r:?}");
    // the first bucket (conv_out and the up path's last layers) starts in
    // the first half of the backward, and most start before it ends
    assert!(r.launched_after[0] >= 1 && r.launched_after[0] <= r.layers / 2, "{r:?}");
    assert!(r.launched_after.windows(2).all(|w| w[0] <= w[1]), "in order: {r:?}");
    let before_end = r.launched_after.iter().filter(|&&k| k < r.layers).count();
    assert!(before_end * 2 >= n, "most buckets start before the backward ends: {r:?}");
    assert_eq!(overlapped[1].report, overlapped[0].report, "both ranks start the same buckets");
    // without overlap, every bucket waits for the end of the backward
    let a = after[0].report.clone().unwrap();
    assert!(a.launched_after.iter().all(|&k| k == a.layers) && a.bucket_elems == r.bucket_elems, "{a:?}");
}

/// Each tensor its own bucket: every report of the gradient hook starts the
/// buckets of that layer, so one sent before its layer's backward ends
/// leaves a gradient out of (or half in) its sum.
#[test]
fn a_bucket_per_tensor_sums_the_same_bits_as_after_the_backward() {
    let overlapped = train(2, true, 1);
    let after = train(2, false, 1);
    follows_one_rank(&train(1, true, 1)[0], &overlapped[0]);
    let r = overlapped[0].report.clone().unwrap();
    assert_eq!(r.bucket_elems.len(), overlapped[0].weights.len(), "{r:?}");
    assert_eq!(r.launched_after[0], 1, "conv_out's weight starts after the first layer: {r:?}");
    for rank in 0..2 {
        assert!(same_bits(&overlapped[rank], &after[rank]), "rank {rank}: overlapped vs after the backward");
    }
}

/// The figures of BENCHMARKS.md (not a check): when each bucket of the
/// mnist preset starts, with the default 16 MiB buckets and with 1 MiB.
/// `cargo test --release --test grad_overlap -- --ignored --nocapture`
#[test]
#[ignore]
fn print_the_bucket_starts_of_the_mnist_preset() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist10k");
    for (mb, elems) in [(16.0, diffuse_trainer::grad_buckets::DEFAULT_BUCKET_ELEMS), (1.0, 1 << 18)] {
        let mut cfg = TrainConfig::for_model(diffuse_unet::UNetConfig::mnist(), data.clone());
        (cfg.batch_size, cfg.steps, cfg.checkpoint_every, cfg.sample_every) = (2, 1, 0, 0);
        let d = tempfile::tempdir().unwrap();
        let comms = local::group_with_timeout(2, std::time::Duration::from_secs(600));
        let reports: Vec<OverlapReport> = std::thread::scope(|s| {
            let hs: Vec<_> = comms
                .into_iter()
                .map(|c| {
                    let (cfg, out) = (cfg.clone(), d.path().join("run"));
                    s.spawn(move || {
                        let c: Arc<dyn Communicator> = Arc::new(c);
                        let mut t = Trainer::new_rank(cfg, Start::Fresh, out, Device::Cpu, Some(c)).unwrap();
                        t.set_grad_buckets(elems, true);
                        t.train_step().unwrap();
                        t.overlap_report().cloned().unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        eprintln!("mnist preset, {mb} MiB buckets: {:?}", reports[0]);
    }
}
