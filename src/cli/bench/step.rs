//! `diffuse bench step`: times whole steps of the real training loop
//! (`Trainer::train_step` on a synthetic image folder) or of sampling (one
//! model call at a fixed timestep), after warm-up, and prints one JSON line:
//! median and minimum seconds, images per second, peak resident memory, and
//! with `--counters` the driver calls of one steady-state step (the device
//! is synchronised after each timed step, outside what is counted).

use crate::cli::device::{DeviceParser, DeviceSpec};
use crate::cli::model_config::load_config;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use diffuse_tensor::gpu::DriverCounts;
use diffuse_tensor::profile::OpTime;
use diffuse_tensor::{Device, Tensor};
use diffuse_trainer::config::TrainConfig;
use diffuse_trainer::raster::RasterImage;
use diffuse_trainer::train::{Start, Trainer};
use diffuse_unet::UNet;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// A training step: forward, loss, backward, clipping, AdamW, EMA.
    Train,
    /// A sampling step: one forward of the model.
    Sample,
}

#[derive(Args)]
pub struct BenchStepArgs {
    /// Model: mnist, cifar10, tiny, tiny-mnist, or a JSON file of UNetConfig fields.
    #[arg(long, default_value = "mnist")]
    pub config: String,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = BenchMode::Train)]
    pub mode: BenchMode,
    #[arg(long, default_value = "cpu", value_parser = DeviceParser)]
    pub device: DeviceSpec,
    /// CPU threads (rayon; default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first (caches fill, kernels compile).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Arithmetic of the convolutions and linear layers: fp32, tf32 or bf16
    /// [default: bf16 on GPUs of compute capability 8.0+, else fp32].
    #[arg(long, value_parser = crate::cli::train::parse_precision)]
    pub precision: Option<diffuse_tensor::Precision>,
    /// At bf16 on a GPU, keep every activation of the training cache in f32
    /// (by default the convolutions' bf16-only inputs are kept in bf16, the
    /// same bits in half the memory): to measure what that saves.
    #[arg(long)]
    pub f32_activations: bool,
    /// Add the driver calls of one steady-state step (GPU devices).
    #[arg(long)]
    pub counters: bool,
    /// Add where the timed steps' time goes, per op (forward and backward
    /// ops apart), and print it as a table on stderr (CPU only).
    #[arg(long)]
    pub profile: bool,
    /// Capture the step once as a graph and replay it (GPU devices; a CUDA
    /// graph on a real GPU): a sampling step after the warm-up, a training
    /// step as `train --graph` does (at least two warm-up steps).
    #[arg(long)]
    pub graph: bool,
}

/// A folder of `count` deterministic, non-constant images for the loader.
fn synthetic_images(dir: &Path, count: usize, size: usize, channels: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for k in 0..count {
        let mut img = RasterImage::filled(size, size, channels, 0);
        for (i, p) in img.pixels.iter_mut().enumerate() {
            *p = ((i as u32).wrapping_mul(2_654_435_761) ^ (k as u32).wrapping_mul(40_503)).to_le_bytes()[1];
        }
        img.save_png(dir.join(format!("{k:04}.png")))?;
    }
    Ok(())
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Peak resident memory of the process (VmHWM), in bytes, where Linux says.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One step to time; returns after queuing (the caller synchronises).
type Step<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

pub fn run(a: BenchStepArgs) -> Result<()> {
    if a.batch_size == 0 || a.steps == 0 {
        bail!("--batch-size and --steps must be at least 1");
    }
    if let Some(n) = a.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("setting the CPU threads")?;
    }
    let model_cfg = load_config(&a.config)?;
    let device = a.device.open()?;
    if a.profile && !matches!(device, Device::Cpu) {
        bail!("--profile times ops on the CPU; on a GPU ops only queue kernels (use `diffuse bench kernels`)");
    }
    let tmp = TempDir(std::env::temp_dir().join(format!(
        "diffuse-bench-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )));
    let (b, s, c) = (a.batch_size, model_cfg.image_size, model_cfg.in_ch);

    // Kept alive for the steps below.
    let graph: Option<diffuse_tensor::gpu::GpuGraph>;
    let mut trainer: Option<Trainer> = None;
    let model;
    let (x, t);
    let mut step: Step = match a.mode {
        BenchMode::Train => {
            let data = tmp.0.join("images");
            synthetic_images(&data, b.max(8), s, c)?;
            let mut cfg = TrainConfig::for_model(model_cfg.clone(), data);
            cfg.batch_size = b;
            cfg.steps = u64::MAX / 2;
            cfg.checkpoint_every = 0;
            cfg.sample_every = 0;
            cfg.precision = a.precision;
            let t = trainer.insert(Trainer::new(cfg, Start::Fresh, tmp.0.join("run"), device.clone())?);
            t.model.params.set_bf16_activations(!a.f32_activations);
            if a.graph && !device.is_cpu() {
                if let Some(why) = t.use_graph() {
                    bail!("--graph: {why}");
                }
            }
            Box::new(move || {
                t.train_step()?;
                Ok(())
            })
        }
        BenchMode::Sample => {
            let mut m = UNet::new(model_cfg.clone(), 0, diffuse_tensor::DType::F32, &device)?;
            m.params.set_precision(a.precision.unwrap_or_else(|| diffuse_tensor::Precision::default_for(&device)));
            model = m;
            x = Tensor::randn([b, c, s, s], 1, 0, diffuse_tensor::DType::F32, &device)?;
            t = Tensor::from_vec((0..b).map(|i| (i * 97 % 1000) as f32).collect::<Vec<_>>(), [b])?
                .to_device(&device)?;
            Box::new(|| {
                model.forward(&x, &t)?;
                Ok(())
            })
        }
    };

    // a training graph: one eager step, then the captured one
    let warmup = if a.graph && a.mode == BenchMode::Train { a.warmup.max(2) } else { a.warmup };
    for _ in 0..warmup {
        step()?;
        device.synchronize()?;
    }
    graph = match (a.graph, &device) {
        (false, _) => None,
        (true, Device::Cpu) => bail!("--graph needs a GPU device (emu or cuda)"),
        // the trainer captures its own step (after one eager step) and replays it
        (true, Device::Gpu(_)) if a.mode == BenchMode::Train => None,
        (true, Device::Gpu(g)) => {
            g.begin_capture()?;
            let captured = step();
            let graph = g.end_capture()?;
            captured?;
            device.synchronize()?;
            Some(graph)
        }
    };
    if let Some(graph) = &graph {
        step = Box::new(move || Ok(graph.replay()?));
    }
    let mut secs = Vec::with_capacity(a.steps);
    let mut per_step: Option<DriverCounts> = None;
    diffuse_tensor::profile::take(); // drop what the warm-up recorded
    diffuse_tensor::profile::set_enabled(a.profile);
    for _ in 0..a.steps {
        let before = device.driver_counts();
        let start = Instant::now();
        step()?;
        let counted = device.driver_counts();
        device.synchronize()?;
        secs.push(start.elapsed().as_secs_f64());
        if let (Some(b0), Some(b1)) = (before, counted) {
            per_step = Some(b1 - b0); // the last step: steady state
        }
    }
    diffuse_tensor::profile::set_enabled(false);
    drop(step);
    let launches_per_graph =
        graph.as_ref().map(|g| g.launches()).or_else(|| trainer.as_ref().and_then(|t| t.graph_launches()));
    let op_times = diffuse_tensor::profile::take();
    let total: f64 = secs.iter().sum();
    secs.sort_by(f64::total_cmp);
    let median = secs[secs.len() / 2];
    let precision = a.precision.unwrap_or_else(|| diffuse_tensor::Precision::default_for(&device));
    let bf16_activations = !device.is_cpu()
        && a.mode == BenchMode::Train
        && precision == diffuse_tensor::Precision::Bf16
        && !a.f32_activations;
    let mut line = serde_json::json!({
        "config": a.config,
        "mode": format!("{:?}", a.mode).to_lowercase(),
        "device": device.to_string(),
        "precision": precision.to_string(),
        "bf16_activations": bf16_activations,
        "batch_size": b,
        "threads": rayon::current_num_threads(),
        "steps": a.steps,
        "median_s": median,
        "min_s": secs[0],
        "images_per_s": b as f64 / median,
        "graph": launches_per_graph,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    if a.counters {
        let counts = match (&device, per_step) {
            (Device::Gpu(g), Some(c)) => {
                let mut m = serde_json::Map::new();
                for (k, v) in c.fields() {
                    m.insert(k.into(), v.into());
                }
                let p = g.pool_stats();
                m.insert("pool_cached_bytes".into(), p.cached_bytes.into());
                m.insert("pool_peak_reserved_bytes".into(), p.peak_reserved_bytes.into());
                serde_json::Value::Object(m)
            }
            _ => serde_json::Value::Null, // the CPU has no driver
        };
        line["counters"] = counts;
    }
    if a.profile {
        line["profile"] = profile_json(&op_times, a.steps, total);
        print_profile_table(&op_times, a.steps, total);
    }
    println!("{line}");
    Ok(())
}

/// The per-op profile as JSON: per op, calls and milliseconds per step and
/// the share of the step; the time outside every op last.
fn profile_json(ops: &[OpTime], steps: usize, total_s: f64) -> serde_json::Value {
    let per_step = |s: f64| 1e3 * s / steps as f64;
    let mut rows: Vec<serde_json::Value> = ops
        .iter()
        .map(|o| {
            serde_json::json!({
                "op": o.op,
                "calls_per_step": o.calls as f64 / steps as f64,
                "ms_per_step": per_step(o.seconds),
                "share": o.seconds / total_s,
            })
        })
        .collect();
    let outside = total_s - ops.iter().map(|o| o.seconds).sum::<f64>();
    rows.push(serde_json::json!({
        "op": "(outside ops)",
        "ms_per_step": per_step(outside),
        "share": outside / total_s,
    }));
    serde_json::Value::Array(rows)
}

/// The same profile, readable, on stderr (stdout keeps one JSON line).
fn print_profile_table(ops: &[OpTime], steps: usize, total_s: f64) {
    let per_step = |s: f64| 1e3 * s / steps as f64;
    eprintln!("{:<28} {:>8} {:>12} {:>7}", "op", "calls", "ms / step", "share");
    for o in ops {
        let calls = o.calls as f64 / steps as f64;
        eprintln!("{:<28} {calls:>8.1} {:>12.2} {:>6.1}%", o.op, per_step(o.seconds), 100.0 * o.seconds / total_s);
    }
    let outside = total_s - ops.iter().map(|o| o.seconds).sum::<f64>();
    eprintln!("{:<28} {:>8} {:>12.2} {:>6.1}%", "(outside ops)", "", per_step(outside), 100.0 * outside / total_s);
    eprintln!("{:<28} {:>8} {:>12.2}", "step (mean)", "", per_step(total_s));
}
